//! The configs of `my-smart-header`, `rustformation` and its alias `http_simple_mutations`: the
//! compiled transformation (shared by every config with the same bytes), the counters, the marker
//! and the route's config. The stream filter they make is in `transform.rs`.

use std::sync::Arc;

use envoy_module::{EnvoyFilterConfig, HttpFilterConfig, PerRouteConfig};
use transformations::intern::{Interned, Interner};
use transformations::{Options, Transformation};

use crate::per_route::{self, RouteConfig, RouteTransformation};
use crate::registry::{Filter, LoadError, LoadedConfig};
use crate::transform::{TransformCounters, TransformFilterConfig};
use crate::{RUSTFORMATION, SIMPLE_MUTATIONS, SMART_HEADER};

/// The lab's filter: a response header from its own JSON shape.
pub const SMART_HEADER_FILTER: Filter = Filter::new(SMART_HEADER, |envoy, config| {
    new_config(Kind::SmartHeader, envoy, config)
})
.with_per_route_config(|config| new_per_route_config(Kind::SmartHeader, config))
.with_loader(|config, _per_route, options| load(Kind::SmartHeader, config, options));

/// kgateway's transformation filter.
pub const RUSTFORMATION_FILTER: Filter = Filter::new(RUSTFORMATION, |envoy, config| {
    new_config(Kind::Transformation(RUSTFORMATION), envoy, config)
})
.with_per_route_config(|config| new_per_route_config(Kind::Transformation(RUSTFORMATION), config))
.with_loader(|config, _per_route, options| {
    load(Kind::Transformation(RUSTFORMATION), config, options)
});

/// kgateway v2.2's name for the same filter.
pub const SIMPLE_MUTATIONS_FILTER: Filter = Filter::new(SIMPLE_MUTATIONS, |envoy, config| {
    new_config(Kind::Transformation(SIMPLE_MUTATIONS), envoy, config)
})
.with_per_route_config(|config| {
    new_per_route_config(Kind::Transformation(SIMPLE_MUTATIONS), config)
})
.with_loader(|config, _per_route, options| {
    load(Kind::Transformation(SIMPLE_MUTATIONS), config, options)
});

/// Which of the two config shapes, and for kgateway's, under which name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    SmartHeader,
    Transformation(&'static str),
}

fn load(kind: Kind, config: &[u8], options: &Options) -> Result<LoadedConfig, LoadError> {
    load_transformation(kind, config, options).map(|t| LoadedConfig::Transformation(Box::new(t)))
}

fn load_transformation(
    kind: Kind,
    config: &[u8],
    options: &Options,
) -> Result<Transformation, LoadError> {
    match kind {
        Kind::SmartHeader => transformations::smart_header_transformation(config, options),
        _ if config.iter().all(u8::is_ascii_whitespace) => {
            return Err(LoadError {
                message: "the config is empty; send {} for a filter that changes nothing".into(),
                transformation: None,
            });
        }
        _ => Transformation::from_json_with(config, options),
    }
    .map_err(|e| LoadError {
        message: e.to_string(),
        transformation: Some(e),
    })
}

/// A compiled transformation, shared by every config (route or listener) with the same bytes.
pub(crate) type SharedTransformation = Interned<Transformation>;

/// The live compiled transformations by their config bytes: `rustformation` and
/// `http_simple_mutations` compile a config the same way, `my-smart-header` its own way.
pub(crate) static TRANSFORMATIONS: Interner<Transformation> = Interner::new();
pub(crate) static SMART_HEADERS: Interner<Transformation> = Interner::new();

/// The compiled transformation for `config`: the one already live for the same bytes (a policy
/// on many routes compiles once), or a new one, freed with the last config that holds it.
fn compile_transformation(kind: Kind, config: &[u8]) -> Result<SharedTransformation, String> {
    let table = match kind {
        Kind::SmartHeader => &SMART_HEADERS,
        Kind::Transformation(_) => &TRANSFORMATIONS,
    };
    // An unusable RUSTFORMATION_RENDER_MAX_* setting refuses the config, saying which.
    transformations::Limits::from_env()?;
    // The release and the limits are chosen once per process, so equal bytes always compile
    // the same.
    let options = crate::outside_envoy::compile_options()?;
    let transformation = table.get_or_try_insert_with(config, || {
        load_transformation(kind, config, &options).map_err(|e| e.message)
    })?;
    envoy_module::log_debug!(
        "compiled transformations: {} live, shared by every config with the same bytes",
        TRANSFORMATIONS.len() + SMART_HEADERS.len()
    );
    for warning in transformation.warnings() {
        envoy_module::log_warn!("config warning: {warning}");
    }
    Ok(transformation)
}

fn new_config(
    kind: Kind,
    envoy: &mut dyn EnvoyFilterConfig,
    config: &[u8],
) -> Result<Box<dyn HttpFilterConfig>, String> {
    let name = match kind {
        Kind::Transformation(name) => name,
        Kind::SmartHeader => SMART_HEADER,
    };
    let listener = compile_transformation(kind, config)?;
    let marker = match kind {
        Kind::Transformation(_) => crate::outside_envoy::marker()?.map(Arc::new),
        Kind::SmartHeader => None,
    };
    let counters = TransformCounters {
        invalid_header_dropped: envoy.define_counter(&format!("{name}.invalid_header_dropped"))?,
        render_errors: envoy.define_counter(&format!("{name}.render_errors"))?,
        budget_exceeded: envoy.define_counter(&format!("{name}.budget_exceeded"))?,
    };
    Ok(Box::new(TransformFilterConfig {
        name,
        listener_sends_marker: per_route::sends_marker(&listener, marker.as_deref()),
        listener,
        marker,
        counters,
    }))
}

fn new_per_route_config(kind: Kind, config: &[u8]) -> Result<PerRouteConfig, String> {
    let marker = match kind {
        // An unusable marker setting refuses the listener config, which says why.
        Kind::Transformation(_) => crate::outside_envoy::marker().ok().flatten(),
        Kind::SmartHeader => None,
    };
    let transformation = compile_transformation(kind, config)?;
    Ok(
        RouteConfig::Transformation(RouteTransformation::new(transformation, marker.as_ref()))
            .shared(),
    )
}
