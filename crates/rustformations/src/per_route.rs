//! Per-route configs: what `per_route_config_new` builds, and how a filter finds its own.

use std::sync::Arc;

use acl::AclPolicy;
use envoy_module::{EnvoyHttpFilter, PerRouteConfig};
use transformations::Transformation;

/// A per-route config as Envoy keeps it for a route (shared by every stream on it).
pub enum RouteConfig {
    Transformation(Arc<Transformation>),
    Acl(Arc<AclPolicy>),
}

fn route_config(envoy: &dyn EnvoyHttpFilter) -> Option<PerRouteConfig> {
    envoy.per_route_config()
}

/// The route's transformation, if the most specific per-route config is one.
pub fn transformation(envoy: &dyn EnvoyHttpFilter) -> Option<Arc<Transformation>> {
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
