//! `rust_module`: the Envoy dynamic module with the lab's `my-smart-header` filter and a drop-in
//! replacement for kgateway's module (`rustformation`, its alias `http_simple_mutations`, and
//! `http-acl`).
//!
//! This crate only maps filter names to filters and glues `envoy-module` (the SDK) to the pure
//! `transformations` and `acl` crates.

use std::sync::Arc;

use envoy_module::{EnvoyFilterConfig, HttpFilterConfig, PerRouteConfig};
use transformations::intern::{Interned, Interner};
use transformations::{Options, Transformation};

mod envoy_message;
mod http_acl;
mod lifecycle;
pub mod outside_envoy;
mod per_route;
pub mod release;
pub mod size_limit;
mod test_filters;
mod transform;

use per_route::{RouteConfig, RouteTransformation};
use transform::{TransformCounters, TransformFilterConfig};
/// The marker header lives with the pure logic, shared with the command-line tool.
pub use transformations::marker;

/// The filter names this module answers to.
pub const SMART_HEADER: &str = "my-smart-header";
pub const RUSTFORMATION: &str = "rustformation";
/// kgateway v2.2's name for the same filter.
pub const SIMPLE_MUTATIONS: &str = "http_simple_mutations";
pub const HTTP_ACL: &str = acl::FILTER_NAME;
pub const SIZE_LIMIT: &str = size_limit::FILTER_NAME;

envoy_module::declare_module!(envoy_module::Module {
    new_filter_config,
    new_per_route_config
});

/// What a filter name means here, or the clean refusal of an unknown one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FilterKind {
    SmartHeader,
    Transformation(&'static str),
    Acl,
    SizeLimit,
    TestPanic,
}

fn filter_kind(name: &str) -> Result<FilterKind, String> {
    match name {
        SMART_HEADER => Ok(FilterKind::SmartHeader),
        RUSTFORMATION => Ok(FilterKind::Transformation(RUSTFORMATION)),
        SIMPLE_MUTATIONS => Ok(FilterKind::Transformation(SIMPLE_MUTATIONS)),
        HTTP_ACL => Ok(FilterKind::Acl),
        SIZE_LIMIT => Ok(FilterKind::SizeLimit),
        test_filters::PANIC_FILTER if test_filters::enabled() => Ok(FilterKind::TestPanic),
        test_filters::PANIC_FILTER => Err(format!(
            "filter '{name}' exists only for tests and is off unless {}=1",
            test_filters::TEST_FILTERS_ENV
        )),
        _ => Err(format!(
            "unknown filter name '{name}'; this module provides {SMART_HEADER}, {RUSTFORMATION}, \
             {SIMPLE_MUTATIONS}, {HTTP_ACL} and {SIZE_LIMIT}"
        )),
    }
}

/// A filter config as this module loads it, without Envoy (what `rustformations validate`
/// checks): the same functions the config callbacks below call.
#[derive(Debug)]
pub enum LoadedConfig {
    /// `my-smart-header`, `rustformation`, `http_simple_mutations`.
    Transformation(Box<Transformation>),
    /// `http-acl`.
    Acl(acl::AclPolicy),
    /// A filter without a compiled form worth showing (`request-size-limit`).
    Other,
}

/// Why a config does not load: the message Envoy's log shows, plus the structured
/// transformation error when there is one (field path, template position).
#[derive(Debug, Clone)]
pub struct LoadError {
    pub message: String,
    pub transformation: Option<transformations::Error>,
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Loads `config` for `filter_name` as Envoy's config callbacks do; `per_route` selects the
/// per-route one (`DynamicModuleFilterPerRoute`), otherwise the listener's (`DynamicModuleFilter`).
pub fn load_config(
    filter_name: &str,
    config: &[u8],
    per_route: bool,
) -> Result<LoadedConfig, LoadError> {
    load_config_with(filter_name, config, per_route, &Options::default())
}

/// [`load_config`] with compile options (e.g. where `env()` reads from); the module always
/// uses the defaults (Envoy's process environment).
pub fn load_config_with(
    filter_name: &str,
    config: &[u8],
    per_route: bool,
    options: &Options,
) -> Result<LoadedConfig, LoadError> {
    let plain = |message: String| LoadError {
        message,
        transformation: None,
    };
    match filter_kind(filter_name).map_err(plain)? {
        kind @ (FilterKind::SmartHeader | FilterKind::Transformation(_)) => {
            load_transformation(kind, config, options)
                .map(|t| LoadedConfig::Transformation(Box::new(t)))
        }
        FilterKind::Acl => parse_acl(config).map(LoadedConfig::Acl).map_err(plain),
        FilterKind::SizeLimit if per_route => {
            Err(plain(format!("{SIZE_LIMIT} has no per-route config")))
        }
        // Its config callback, run against a config side outside Envoy (it only defines a counter).
        FilterKind::SizeLimit => size_limit::new_config(&mut OutsideEnvoy, config)
            .map(|_| LoadedConfig::Other)
            .map_err(plain),
        FilterKind::TestPanic => test_filters::parse(config)
            .map(|_| LoadedConfig::Other)
            .map_err(plain),
    }
}

/// The filter-config side of a config loaded outside Envoy (the CLI's path): every counter is
/// defined, as it would be while Envoy loads the config; nothing ever increments it.
struct OutsideEnvoy;

impl EnvoyFilterConfig for OutsideEnvoy {
    fn define_counter(&mut self, _name: &str) -> Result<envoy_module::CounterId, String> {
        Ok(envoy_module::CounterId(0))
    }
}

fn load_transformation(
    kind: FilterKind,
    config: &[u8],
    options: &Options,
) -> Result<Transformation, LoadError> {
    match kind {
        FilterKind::SmartHeader => transformations::smart_header_transformation(config, options),
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
static TRANSFORMATIONS: Interner<Transformation> = Interner::new();
static SMART_HEADERS: Interner<Transformation> = Interner::new();

/// The compiled transformation for `config`: the one already live for the same bytes (a policy
/// on many routes compiles once), or a new one, freed with the last config that holds it.
fn compile_transformation(kind: FilterKind, config: &[u8]) -> Result<SharedTransformation, String> {
    let table = match kind {
        FilterKind::SmartHeader => &SMART_HEADERS,
        _ => &TRANSFORMATIONS,
    };
    // An unusable RUSTFORMATION_RENDER_MAX_* setting refuses the config, saying which.
    transformations::Limits::from_env()?;
    // The release and the limits are chosen once per process, so equal bytes always compile
    // the same.
    let options = outside_envoy::compile_options()?;
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

fn parse_acl(config: &[u8]) -> Result<acl::AclPolicy, String> {
    if config.iter().all(u8::is_ascii_whitespace) {
        return Err("the config is empty; http-acl needs at least {\"defaultAction\": ...}".into());
    }
    acl::AclConfig::from_json(config).map_err(|e| e.to_string())
}

pub fn new_filter_config(
    envoy: &mut dyn EnvoyFilterConfig,
    filter_name: &str,
    config: &[u8],
) -> Result<Box<dyn HttpFilterConfig>, String> {
    let kind = filter_kind(filter_name)?;
    let config: Box<dyn HttpFilterConfig> = match kind {
        FilterKind::SmartHeader | FilterKind::Transformation(_) => {
            let name = match kind {
                FilterKind::Transformation(name) => name,
                _ => SMART_HEADER,
            };
            let listener = compile_transformation(kind, config)?;
            let marker = match kind {
                FilterKind::Transformation(_) => outside_envoy::marker()?.map(Arc::new),
                _ => None,
            };
            let counters = TransformCounters {
                invalid_header_dropped: envoy
                    .define_counter(&format!("{name}.invalid_header_dropped"))?,
                render_errors: envoy.define_counter(&format!("{name}.render_errors"))?,
                budget_exceeded: envoy.define_counter(&format!("{name}.budget_exceeded"))?,
            };
            Box::new(TransformFilterConfig {
                name,
                listener_sends_marker: per_route::sends_marker(&listener, marker.as_deref()),
                listener,
                marker,
                counters,
            })
        }
        FilterKind::Acl => Box::new(http_acl::AclFilterConfig {
            policy: Arc::new(parse_acl(config)?),
            blocked_counter: envoy.define_counter(acl::BLOCKED_COUNTER)?,
        }),
        FilterKind::SizeLimit => size_limit::new_config(envoy, config)?,
        FilterKind::TestPanic => {
            let panic_config = test_filters::parse(config)?;
            if panic_config.panic_on == test_filters::PanicPoint::Config {
                panic!("test-panic: provoked panic in config creation");
            }
            Box::new(panic_config)
        }
    };
    Ok(Box::new(lifecycle::Counted::new(config)))
}

pub fn new_per_route_config(name: &str, config: &[u8]) -> Result<PerRouteConfig, String> {
    let kind = filter_kind(name)?;
    let route_config = match kind {
        FilterKind::SmartHeader | FilterKind::Transformation(_) => {
            let marker = match kind {
                // An unusable marker setting refuses the listener config, which says why.
                FilterKind::Transformation(_) => outside_envoy::marker().ok().flatten(),
                _ => None,
            };
            RouteConfig::Transformation(RouteTransformation::new(
                compile_transformation(kind, config)?,
                marker.as_ref(),
            ))
        }
        FilterKind::Acl => RouteConfig::Acl(Arc::new(parse_acl(config)?)),
        FilterKind::SizeLimit => return Err(format!("{SIZE_LIMIT} has no per-route config")),
        FilterKind::TestPanic => {
            let panic_config = test_filters::parse(config)?;
            if panic_config.panic_on == test_filters::PanicPoint::PerRouteConfig {
                panic!("test-panic: provoked panic in per-route config creation");
            }
            return Err("test-panic has no per-route config".into());
        }
    };
    lifecycle::ROUTE_CONFIGS.created();
    Ok(Arc::new(route_config))
}
