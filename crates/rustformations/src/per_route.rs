//! Per-route configs: what `per_route_config_new` builds, and how a filter finds its own.

use std::sync::Arc;

use acl::AclPolicy;
use envoy_module::{EnvoyHttpFilter, PerRouteConfig};
use transformations::Transformation;
use transformations::marker::Marker;

use crate::SharedTransformation;

/// A per-route config as Envoy keeps it for a route (shared by every stream on it).
pub enum RouteConfig {
    Transformation(RouteTransformation),
    Acl(Arc<AclPolicy>),
}

/// A route's transformation, and whether its response side always sends the marker header itself
/// (worked out at load, so that a stream need not ask).
#[derive(Clone)]
pub struct RouteTransformation {
    /// Shared with every route (and listener) whose config has the same bytes.
    pub transformation: SharedTransformation,
    pub sends_marker: bool,
}

impl RouteTransformation {
    pub fn new(
        transformation: SharedTransformation,
        marker: Option<&Marker>,
    ) -> RouteTransformation {
        RouteTransformation {
            sends_marker: sends_marker(&transformation, marker),
            transformation,
        }
    }
}

/// Whether a successful response side always leaves the marker header with the marker's value
/// (as the lab's policy does): the filter then does not send it a second time.
pub fn sends_marker(transformation: &Transformation, marker: Option<&Marker>) -> bool {
    marker.is_some_and(|m| transformation.response().always_sets(&m.name, &m.value))
}

impl RouteConfig {
    /// The config as Envoy keeps it for a route, counted as live until it drops.
    pub fn shared(self) -> PerRouteConfig {
        crate::lifecycle::ROUTE_CONFIGS.created();
        Arc::new(self)
    }
}

impl Drop for RouteConfig {
    fn drop(&mut self) {
        crate::lifecycle::ROUTE_CONFIGS.dropped();
    }
}

fn route_config(envoy: &dyn EnvoyHttpFilter) -> Option<PerRouteConfig> {
    envoy.per_route_config()
}

/// The route's transformation, if the most specific per-route config is one.
pub fn transformation(envoy: &dyn EnvoyHttpFilter) -> Option<RouteTransformation> {
    match route_config(envoy)?.downcast_ref::<RouteConfig>()? {
        RouteConfig::Transformation(t) => Some(t.clone()),
        RouteConfig::Acl(_) => None,
    }
}

/// The route's ACL policy, if the most specific per-route config is one.
pub fn acl_policy(envoy: &dyn EnvoyHttpFilter) -> Option<Arc<AclPolicy>> {
    match route_config(envoy)?.downcast_ref::<RouteConfig>()? {
        RouteConfig::Acl(p) => Some(p.clone()),
        RouteConfig::Transformation(_) => None,
    }
}

#[cfg(test)]
mod tests {
    //! The names and configs the module accepts, as `filter_name` and as per-route config name.

    use super::RouteConfig;
    use crate::transform_config::TRANSFORMATIONS;
    use crate::{new_filter_config, new_per_route_config};
    use envoy_module::testing::FakeFilterConfigEnvoy;
    use transformations::intern::Interned;

    fn per_route(name: &str, config: &str) -> Result<RouteConfig, String> {
        new_per_route_config(name, config.as_bytes()).map(|c| {
            match c.downcast_ref::<RouteConfig>() {
                Some(RouteConfig::Transformation(t)) => RouteConfig::Transformation(t.clone()),
                Some(RouteConfig::Acl(p)) => RouteConfig::Acl(p.clone()),
                None => panic!("not a RouteConfig"),
            }
        })
    }

    #[test]
    fn kgateway_names_are_accepted_in_both_places() {
        for name in ["rustformation", "http_simple_mutations"] {
            assert!(matches!(
                per_route(name, r#"{"request":{"set":[{"name":"a","value":"b"}]}}"#),
                Ok(RouteConfig::Transformation(_))
            ));
            assert!(new_filter_config(&mut FakeFilterConfigEnvoy::new(), name, b"{}").is_ok());
        }
        assert!(matches!(
            per_route("http-acl", r#"{"defaultAction":"allow"}"#),
            Ok(RouteConfig::Acl(_))
        ));
        let mut envoy = FakeFilterConfigEnvoy::new();
        assert!(new_filter_config(&mut envoy, "http-acl", br#"{"defaultAction":"allow"}"#).is_ok());
        assert!(envoy.counter_id("dev.kgateway.http.acl.blocked").is_some());
    }

    #[test]
    fn unknown_names_are_refused_cleanly() {
        let err = per_route("rustformations", "{}").err().unwrap();
        assert!(
            err.contains("unknown filter name 'rustformations'"),
            "{err}"
        );
        let err = new_filter_config(&mut FakeFilterConfigEnvoy::new(), "", b"{}")
            .err()
            .unwrap();
        assert!(err.contains("unknown filter name"), "{err}");
    }

    #[test]
    fn bad_configs_are_refused_with_the_reason() {
        for (name, config, needle) in [
            ("rustformation", "{not json", "invalid json"),
            ("rustformation", "", "empty"),
            (
                "rustformation",
                r#"{"request":{"set":[{"name":"x","value":"{{ a"}]}}"#,
                "request.set[0].value",
            ),
            (
                "rustformation",
                r#"{"response":{"body":{"parseAs":"Xml"}}}"#,
                "parseAs",
            ),
            (
                "http-acl",
                r#"{"defaultAction":"deny","rules":[{"cidrs":["10.0.0.1/8"],"action":"deny"}]}"#,
                "host bits",
            ),
            (
                "http-acl",
                r#"{"defaultAction":"deny","rules":[{"cidrs":["10.0.0/8"],"action":"deny"}]}"#,
                "10.0.0/8",
            ),
            ("http-acl", "[", "line 1"),
        ] {
            let err = per_route(name, config)
                .err()
                .unwrap_or_else(|| panic!("{config} accepted"));
            assert!(err.contains(needle), "{config}: {err}");
        }
        // Not UTF-8.
        assert!(new_per_route_config("rustformation", b"{\"request\":\xff}").is_err());
    }

    fn shared(config: &envoy_module::PerRouteConfig) -> crate::SharedTransformation {
        match config.downcast_ref::<RouteConfig>() {
            Some(RouteConfig::Transformation(t)) => t.transformation.clone(),
            _ => panic!("not a transformation"),
        }
    }

    /// The issue's policy: three real templates.
    const POLICY: &str = r#"{"request": {"set": [{"name": "x-route", "value": "r{{ request_header(\"x-a\") }}"}, {"name": "x-b", "value": "{% if request_header(\"x-c\") == \"1\" %}one{% else %}other{% endif %}"}]}, "response": {"set": [{"name": "x-resp", "value": "{{ header(\":status\") }}-{{ substring(request_header(\":path\"), 0, 5) }}"}]}}"#;

    #[test]
    fn routes_with_the_same_bytes_share_one_compiled_config() {
        // Bytes no other test uses, so that the process-wide table is ours alone here.
        let policy = POLICY.replace("x-route", "x-shared-test");
        let a = new_per_route_config("rustformation", policy.as_bytes()).unwrap();
        let b = new_per_route_config("http_simple_mutations", policy.as_bytes()).unwrap();
        assert!(Interned::ptr_eq(&shared(&a), &shared(&b)));
        // The listener's config with the same bytes shares it too.
        let listener = new_filter_config(
            &mut FakeFilterConfigEnvoy::new(),
            "rustformation",
            policy.as_bytes(),
        )
        .unwrap();
        assert_eq!(Interned::holders(&shared(&a)), 4); // a, b, the listener, the probe
        // Other bytes (one space more) compile their own.
        let other = policy.replacen(' ', "  ", 1);
        let c = new_per_route_config("rustformation", other.as_bytes()).unwrap();
        assert!(!Interned::ptr_eq(&shared(&a), &shared(&c)));
        // my-smart-header reads the same bytes its own way: never shared with rustformation.
        let smart = br#"{"response": {"set": [{"name": "x-shared-test-smart", "value": "v"}]}}"#;
        let d = new_per_route_config("rustformation", smart).unwrap();
        let e = new_per_route_config("my-smart-header", smart).unwrap();
        assert!(!Interned::ptr_eq(&shared(&d), &shared(&e)));

        // Freed when the last holder goes: the route configs and the listener, in any order.
        assert!(TRANSFORMATIONS.get(policy.as_bytes()).is_some());
        drop(a);
        drop(listener);
        assert!(TRANSFORMATIONS.get(policy.as_bytes()).is_some());
        drop(b);
        assert!(TRANSFORMATIONS.get(policy.as_bytes()).is_none());
        assert!(TRANSFORMATIONS.get(other.as_bytes()).is_some());
        drop(c);
        assert!(TRANSFORMATIONS.get(other.as_bytes()).is_none());
    }

    /// A worker holding a route's config for a request in flight outlives the route update
    /// that dropped it on the main thread; the config the update brought in is compiled anew
    /// or shared, and the old one is freed by the worker's drop.
    #[test]
    fn a_config_held_by_a_worker_outlives_its_route() {
        let policy = POLICY.replace("x-route", "x-worker-test");
        let route = new_per_route_config("rustformation", policy.as_bytes()).unwrap();
        let in_flight = shared(&route);
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let worker = std::thread::spawn(move || {
            rx.recv().unwrap();
            assert!(in_flight.request().has_work());
            drop(in_flight);
        });
        drop(route); // the route update, on the main thread
        assert!(TRANSFORMATIONS.get(policy.as_bytes()).is_some());
        let replacement = new_per_route_config("rustformation", policy.as_bytes()).unwrap();
        tx.send(()).unwrap();
        worker.join().unwrap();
        assert!(TRANSFORMATIONS.get(policy.as_bytes()).is_some());
        drop(replacement);
        assert!(TRANSFORMATIONS.get(policy.as_bytes()).is_none());
    }

    #[test]
    fn unknown_fields_are_ignored() {
        assert!(per_route(
            "rustformation",
            r#"{"future":1,"request":{"also":{"x":1},"set":[{"name":"a","value":"b","extra":true}]}}"#
        )
        .is_ok());
    }
}
