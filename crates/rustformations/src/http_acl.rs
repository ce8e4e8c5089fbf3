//! `http-acl`: allow or deny a request by the client address, kgateway's contract.

use std::sync::Arc;

use acl::{AclPolicy, Decision};
use envoy_module::{
    Attribute, CounterId, EnvoyHttpFilter, HeadersStatus, HttpFilter, HttpFilterConfig,
};

/// A listener-level `http-acl` config. A per-route config replaces its policy.
pub struct AclFilterConfig {
    pub policy: Arc<AclPolicy>,
    pub blocked_counter: CounterId,
}

impl HttpFilterConfig for AclFilterConfig {
    fn new_filter(&self) -> Box<dyn HttpFilter> {
        Box::new(AclFilter {
            listener_policy: self.policy.clone(),
            blocked_counter: self.blocked_counter,
        })
    }
}

struct AclFilter {
    listener_policy: Arc<AclPolicy>,
    blocked_counter: CounterId,
}

impl HttpFilter for AclFilter {
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
