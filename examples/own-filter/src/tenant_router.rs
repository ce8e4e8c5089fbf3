//! `tenant-router`: routes by API key. A request without the key header gets `401 missing api key`;
//! any other goes upstream with `x-tenant` set to the key's part before the first `.` (the whole
//! key when it has none), and its response gets the same value in `x-tenant-echo`.
//!
//! Config (a JSON string): `{"header": "x-api-key"}`; `header` names the key's header and may be
//! left out (`{}`).

use envoy_module::{
    EnvoyFilterConfig, EnvoyHttpFilter, HeaderKind, HeadersStatus, Hooks, HttpFilter,
    HttpFilterConfig,
};
use rustformations::Filter;
use serde::Deserialize;

/// The name Envoy's `filter_name` selects this filter by.
pub const FILTER_NAME: &str = "tenant-router";
/// Its line in the module's table (`declare_module!` in lib.rs).
pub const FILTER: Filter = Filter::new(FILTER_NAME, new_config);

/// The local reply's response code details (in access logs as `%RESPONSE_CODE_DETAILS%`).
pub const DETAILS: &str = "tenant_router_missing_api_key";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    #[serde(default = "default_header")]
    header: String,
}

fn default_header() -> String {
    "x-api-key".to_owned()
}

/// Parses the config once, when Envoy loads it; an `Err` makes Envoy reject the config.
fn new_config(
    _envoy: &mut dyn EnvoyFilterConfig,
    config: &[u8],
) -> Result<Box<dyn HttpFilterConfig>, String> {
    let settings: Settings = rustformations::json_object::from_slice(config)
        .map_err(|e| format!("{FILTER_NAME}: expected {{\"header\": \"<name>\"}}: {e}"))?;
    Ok(Box::new(TenantRouterConfig {
        header: settings.header,
    }))
}

struct TenantRouterConfig {
    header: String,
}

impl HttpFilterConfig for TenantRouterConfig {
    fn new_filter(&self) -> Box<dyn HttpFilter> {
        Box::new(TenantRouter {
            header: self.header.clone(),
            tenant: None,
        })
    }
}

/// One stream's filter.
struct TenantRouter {
    header: String,
    /// Set from the request's key; echoed on the response.
    tenant: Option<Vec<u8>>,
}

impl HttpFilter for TenantRouter {
    fn hooks(&self) -> Hooks {
        Hooks::REQUEST_HEADERS | Hooks::RESPONSE_HEADERS
    }

    fn on_request_headers(
        &mut self,
        envoy: &mut dyn EnvoyHttpFilter,
        _end_of_stream: bool,
    ) -> HeadersStatus {
        let tenant = envoy
            .header(HeaderKind::RequestHeaders, &self.header, 0)
            .filter(|key| !key.is_empty())
            .map(|key| key.split(|&b| b == b'.').next().unwrap_or(key).to_vec());
        let Some(tenant) = tenant else {
            envoy.send_local_reply(
                401,
                &[("content-type", b"text/plain")],
                b"missing api key",
                DETAILS,
            );
            return HeadersStatus::StopIteration;
        };
        // Replaces any x-tenant the client sent: the upstream trusts only the key's.
        envoy.set_header(HeaderKind::RequestHeaders, "x-tenant", &tenant);
        self.tenant = Some(tenant);
        HeadersStatus::Continue
    }

    fn on_response_headers(
        &mut self,
        envoy: &mut dyn EnvoyHttpFilter,
        _end_of_stream: bool,
    ) -> HeadersStatus {
        if let Some(tenant) = &self.tenant {
            envoy.set_header(HeaderKind::ResponseHeaders, "x-tenant-echo", tenant);
        }
        HeadersStatus::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_module::testing::{FakeEnvoy, FakeFilterConfigEnvoy};

    fn filter(config: &str) -> Box<dyn HttpFilter> {
        new_config(&mut FakeFilterConfigEnvoy::new(), config.as_bytes())
            .expect("valid config")
            .new_filter()
    }

    fn refusal(config: &str) -> String {
        new_config(&mut FakeFilterConfigEnvoy::new(), config.as_bytes())
            .err()
            .expect("refused")
    }

    #[test]
    fn a_request_without_the_key_gets_401_missing_api_key() {
        let mut f = filter("{}");
        let mut envoy = FakeEnvoy::with_request_headers([(":path", "/")]);
        assert_eq!(
            f.on_request_headers(&mut envoy, true),
            HeadersStatus::StopIteration
        );
        let reply = envoy.local_reply.as_ref().expect("a local reply");
        assert_eq!(reply.status, 401);
        assert_eq!(reply.body, b"missing api key");
        assert_eq!(reply.details, DETAILS);
        // Its response is the local reply: nothing to echo.
        f.on_response_headers(&mut envoy, true);
        assert_eq!(envoy.response_headers.get("x-tenant-echo", 0), None);
    }

    #[test]
    fn an_empty_key_is_a_missing_key() {
        let mut f = filter("{}");
        let mut envoy = FakeEnvoy::with_request_headers([("x-api-key", "")]);
        f.on_request_headers(&mut envoy, true);
        assert_eq!(envoy.local_reply.map(|r| r.status), Some(401));
    }

    #[test]
    fn the_tenant_is_the_part_of_the_key_before_the_first_dot() {
        for (key, tenant) in [("acme.k3y.more", "acme"), ("acme", "acme"), (".secret", "")] {
            let mut f = filter("{}");
            let mut envoy =
                FakeEnvoy::with_request_headers([("x-api-key", key), ("x-tenant", "forged")]);
            assert_eq!(
                f.on_request_headers(&mut envoy, true),
                HeadersStatus::Continue
            );
            assert!(envoy.local_reply.is_none());
            assert_eq!(
                envoy.request_headers.values("x-tenant").collect::<Vec<_>>(),
                [tenant.as_bytes()],
                "{key}"
            );
            f.on_response_headers(&mut envoy, true);
            assert_eq!(
                envoy.response_headers.get("x-tenant-echo", 0),
                Some(tenant.as_bytes()),
                "{key}"
            );
        }
    }

    #[test]
    fn the_config_names_the_key_header() {
        let mut f = filter(r#"{"header": "authorization-key"}"#);
        let mut envoy = FakeEnvoy::with_request_headers([("x-api-key", "acme.1")]);
        f.on_request_headers(&mut envoy, true);
        assert_eq!(envoy.local_reply.map(|r| r.status), Some(401));

        let mut f = filter(r#"{"header": "authorization-key"}"#);
        let mut envoy = FakeEnvoy::with_request_headers([("authorization-key", "globex.2")]);
        f.on_request_headers(&mut envoy, true);
        assert_eq!(
            envoy.request_headers.get("x-tenant", 0),
            Some(&b"globex"[..])
        );
    }

    #[test]
    fn a_config_that_is_not_an_object_with_a_string_header_is_refused_in_one_line() {
        for (config, needle) in [
            ("[1]", "expected a JSON object, found an array"),
            (r#""x""#, "expected a JSON object, found a string"),
            ("1", "expected a JSON object, found a number"),
            (
                r#"{"header": 1}"#,
                "invalid type: integer `1`, expected a string",
            ),
            (
                r#"{"header": null}"#,
                "invalid type: null, expected a string",
            ),
            (r#"{"headers": "x"}"#, "unknown field `headers`"),
            ("", "EOF"),
        ] {
            let err = refusal(config);
            assert!(
                err.starts_with(r#"tenant-router: expected {"header": "<name>"}: "#),
                "{err}"
            );
            assert!(err.contains(needle), "{config}: {err}");
            assert!(!err.contains('\n'), "{err}");
        }
    }

    #[test]
    fn the_module_serves_the_built_in_filters_and_this_one_under_its_own_name() {
        assert!(
            !rustformations::BUILT_IN
                .public_names()
                .contains(&FILTER_NAME)
        );
        let registry =
            rustformations::Registry::new(&[rustformations::BUILT_IN_FILTERS, &[FILTER]]);
        let err = registry
            .find("no-such-filter")
            .err()
            .expect("an unknown name");
        assert!(
            err.ends_with("http-acl, request-size-limit and tenant-router"),
            "{err}"
        );
        assert!(registry.find(FILTER_NAME).is_ok());
        assert!(registry.find("rustformation").is_ok());
        let err = registry
            .new_per_route_config(FILTER_NAME, b"{}")
            .expect_err("no per-route config");
        assert_eq!(err, "tenant-router has no per-route config");
    }
}
