//! `http-acl`: allow or deny a request by the client address, kgateway's contract.

use std::sync::Arc;

use acl::{AclPolicy, Decision};
use envoy_module::{
    Attribute, CounterId, EnvoyFilterConfig, EnvoyHttpFilter, HeadersStatus, Hooks, HttpFilter,
    HttpFilterConfig, NewFilter, PerRouteConfig,
};
use transformations::Options;

use crate::per_route::RouteConfig;
use crate::registry::{Filter, LoadError, LoadedConfig};

/// kgateway's name; a route's policy replaces the listener's.
pub const FILTER: Filter = Filter::new(acl::FILTER_NAME, new_config)
    .with_per_route_config(new_per_route_config)
    .with_loader(load);

fn parse(config: &[u8]) -> Result<AclPolicy, String> {
    if config.iter().all(u8::is_ascii_whitespace) {
        return Err("the config is empty; http-acl needs at least {\"defaultAction\": ...}".into());
    }
    acl::AclConfig::from_json(config).map_err(|e| e.to_string())
}

fn new_config(
    envoy: &mut dyn EnvoyFilterConfig,
    config: &[u8],
) -> Result<Box<dyn HttpFilterConfig>, String> {
    Ok(Box::new(AclFilterConfig {
        policy: Arc::new(parse(config)?),
        blocked_counter: envoy.define_counter(acl::BLOCKED_COUNTER)?,
    }))
}

fn new_per_route_config(config: &[u8]) -> Result<PerRouteConfig, String> {
    Ok(RouteConfig::Acl(Arc::new(parse(config)?)).shared())
}

fn load(config: &[u8], _per_route: bool, _options: &Options) -> Result<LoadedConfig, LoadError> {
    parse(config)
        .map(LoadedConfig::Acl)
        .map_err(LoadError::from)
}

/// A listener-level `http-acl` config. A per-route config replaces its policy.
pub struct AclFilterConfig {
    pub policy: Arc<AclPolicy>,
    pub blocked_counter: CounterId,
}

impl AclFilterConfig {
    fn filter(&self) -> AclFilter {
        AclFilter {
            listener_policy: self.policy.clone(),
            blocked_counter: self.blocked_counter,
        }
    }
}

impl HttpFilterConfig for AclFilterConfig {
    fn new_filter(&self) -> Box<dyn HttpFilter> {
        Box::new(self.filter())
    }

    /// In the stream's one allocation.
    fn new_stream_filter(&self) -> NewFilter {
        NewFilter::new(self.filter())
    }
}

struct AclFilter {
    listener_policy: Arc<AclPolicy>,
    blocked_counter: CounterId,
}

impl HttpFilter for AclFilter {
    /// The decision is made on the request headers; nothing else of the stream is needed.
    fn hooks(&self) -> Hooks {
        Hooks::REQUEST_HEADERS
    }

    fn on_request_headers(
        &mut self,
        envoy: &mut dyn EnvoyHttpFilter,
        _end_of_stream: bool,
    ) -> HeadersStatus {
        let route_policy = crate::per_route::acl_policy(envoy);
        let policy = route_policy.as_deref().unwrap_or(&self.listener_policy);
        let client = envoy
            .attribute_string(Attribute::SourceAddress)
            .and_then(|bytes| std::str::from_utf8(bytes).ok());
        let decision = policy.decide(client);
        let Some(response) = policy.deny_response(&decision) else {
            return HeadersStatus::Continue;
        };
        let Decision::Deny { blocked_by } = decision else {
            return HeadersStatus::Continue;
        };
        envoy.increment_counter(self.blocked_counter, 1);
        envoy.set_dynamic_metadata_string(
            acl::METADATA_NAMESPACE,
            acl::METADATA_KEY_BLOCKED_BY,
            blocked_by,
        );
        let headers: Vec<(&str, &[u8])> = response
            .headers
            .iter()
            .map(|(k, v)| (*k, v.as_bytes()))
            .collect();
        envoy.send_local_reply(
            response.status,
            &headers,
            acl::DENY_BODY.as_bytes(),
            acl::DENY_DETAILS,
        );
        HeadersStatus::StopIteration
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use acl::AclConfig;
    use envoy_module::testing::FakeEnvoy;
    use envoy_module::{Attribute, CounterId, HeadersStatus, HttpFilterConfig};

    use super::AclFilterConfig;
    use crate::per_route::RouteConfig;

    const BLOCKED: CounterId = CounterId(7);

    fn config(json: &str) -> AclFilterConfig {
        AclFilterConfig {
            policy: Arc::new(AclConfig::from_json(json.as_bytes()).unwrap()),
            blocked_counter: BLOCKED,
        }
    }

    fn from(addr: Option<&str>) -> FakeEnvoy {
        let mut e = FakeEnvoy::with_request_headers([(":method", "GET"), (":path", "/")]);
        if let Some(addr) = addr {
            e.string_attributes
                .insert(Attribute::SourceAddress, addr.as_bytes().to_vec());
        }
        e
    }

    fn blocked_by(e: &FakeEnvoy) -> Option<&str> {
        e.dynamic_metadata
            .get(&(
                acl::METADATA_NAMESPACE.to_string(),
                acl::METADATA_KEY_BLOCKED_BY.to_string(),
            ))
            .map(String::as_str)
    }

    const POLICY: &str = r#"{"defaultAction":"allow",
        "rules":[{"name":"office","cidrs":["10.0.0.0/8"],"action":"deny"},
                 {"cidrs":["2001:db8::/32"],"action":"deny"}],
        "denyResponse":{"statusCode":451,"headers":[{"name":"x-b","value":"2"},{"name":"x-a","value":"1"}],
                        "blockedByHeaderName":"x-blocked-by"}}"#;

    #[test]
    fn allow_continues_without_side_effects() {
        let mut f = config(POLICY).new_filter();
        let mut e = from(Some("192.0.2.1:443"));
        assert_eq!(f.on_request_headers(&mut e, true), HeadersStatus::Continue);
        assert!(e.local_reply.is_none());
        assert!(e.dynamic_metadata.is_empty());
        assert_eq!(e.counter(BLOCKED), 0);
    }

    #[test]
    fn deny_replies_counts_and_sets_metadata() {
        let mut f = config(POLICY).new_filter();
        let mut e = from(Some("10.1.2.3:5000"));
        assert_eq!(
            f.on_request_headers(&mut e, false),
            HeadersStatus::StopIteration
        );
        let reply = e.local_reply.clone().unwrap();
        assert_eq!(reply.status, 451);
        assert!(reply.body.is_empty());
        assert_eq!(reply.details, "http-acl: denied by policy");
        let headers: Vec<(&str, &[u8])> = reply
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_slice()))
            .collect();
        assert_eq!(
            headers,
            [
                ("x-b", &b"2"[..]),
                ("x-a", b"1"),
                ("x-blocked-by", b"office")
            ]
        );
        assert_eq!(e.counter(BLOCKED), 1);
        assert_eq!(blocked_by(&e), Some("office"));
    }

    #[test]
    fn unnamed_rule_ipv6_and_mapped_clients() {
        let mut e = from(Some("[2001:db8::7]:1"));
        config(POLICY).new_filter().on_request_headers(&mut e, true);
        assert_eq!(blocked_by(&e), Some("rule"));

        let mut e = from(Some("[::ffff:10.0.0.1]:1"));
        config(POLICY).new_filter().on_request_headers(&mut e, true);
        assert_eq!(blocked_by(&e), Some("office"));
    }

    #[test]
    fn missing_or_unparseable_address_is_unknown_ip() {
        for addr in [None, Some("/var/run/envoy.sock"), Some("")] {
            let mut e = from(addr);
            let status = config(r#"{"defaultAction":"allow"}"#)
                .new_filter()
                .on_request_headers(&mut e, true);
            assert_eq!(status, HeadersStatus::StopIteration, "{addr:?}");
            assert_eq!(blocked_by(&e), Some("unknown-ip"));
            assert_eq!(e.local_reply.unwrap().status, 403);
        }
    }

    #[test]
    fn per_route_policy_replaces_the_listener_policy() {
        let listener = config(r#"{"defaultAction":"allow"}"#);
        let mut e = from(Some("192.0.2.1:1"));
        e.per_route = Some(Arc::new(RouteConfig::Acl(Arc::new(
            AclConfig::from_json(br#"{"defaultAction":"deny"}"#).unwrap(),
        ))));
        listener.new_filter().on_request_headers(&mut e, true);
        assert_eq!(blocked_by(&e), Some("default"));

        // A per-route config of another kind is not ours: the listener policy applies.
        let mut e = from(Some("192.0.2.1:1"));
        e.per_route = Some(Arc::new(RouteConfig::Transformation(
            crate::per_route::RouteTransformation::new(
                transformations::intern::Interned::unshared(
                    transformations::Transformation::from_json(b"{}").unwrap(),
                ),
                None,
            ),
        )));
        assert_eq!(
            listener.new_filter().on_request_headers(&mut e, true),
            HeadersStatus::Continue
        );
    }

    #[test]
    fn acts_in_the_request_headers_phase_only() {
        let mut f = config(r#"{"defaultAction":"deny"}"#).new_filter();
        let mut e = from(Some("192.0.2.1:1"));
        e.response_headers.add(":status", b"200");
        assert_eq!(f.on_response_headers(&mut e, true), HeadersStatus::Continue);
        assert!(e.local_reply.is_none());
    }
}
