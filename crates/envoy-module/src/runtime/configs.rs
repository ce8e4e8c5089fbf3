//! Filter configs and per-route configs: what `config_new` and `per_route_config_new` build from
//! the module's factories, and how many per-route configs Envoy holds.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::panics::{caught, guarded};
use crate::api::{
    CounterId, EnvoyFilterConfig, HttpFilterConfig, LogLevel, Module, PerRouteConfig,
};
use crate::{PANIC_COUNTER, log};

/// Per-route configs of this module that Envoy holds. While there are none, no route can carry
/// one of ours, so a stream's per-route lookup answers None without calling into Envoy.
static LIVE_PER_ROUTE_CONFIGS: AtomicUsize = AtomicUsize::new(0);

pub(crate) fn per_route_config_created() {
    LIVE_PER_ROUTE_CONFIGS.fetch_add(1, Ordering::Release);
}

pub(crate) fn per_route_config_destroyed() {
    LIVE_PER_ROUTE_CONFIGS.fetch_sub(1, Ordering::Release);
}

pub(crate) fn any_per_route_config() -> bool {
    LIVE_PER_ROUTE_CONFIGS.load(Ordering::Acquire) > 0
}

/// What every stream of one filter config shares.
pub(crate) struct ConfigShared {
    pub(crate) name: String,
    pub(crate) panic_counter: Option<CounterId>,
}

/// The module side of an Envoy filter config (what `config_new` returns to Envoy).
pub(crate) struct ConfigInstance {
    pub(super) factory: Box<dyn HttpFilterConfig>,
    pub(super) shared: Arc<ConfigShared>,
}

impl ConfigInstance {
    /// The module's [`HttpFilterConfig::stream_is_idle`]; a panic counts as "not idle", so the
    /// stream gets a filter (whose creation is guarded and answers 500 if it panics too).
    pub(crate) fn stream_is_idle(&self) -> bool {
        caught(|| self.factory.stream_is_idle()).unwrap_or(false)
    }
}

/// `config_new`: validate the name, define the panic counter, run the module's factory.
pub(crate) fn new_config(
    module: &Module,
    envoy: &mut dyn EnvoyFilterConfig,
    name: &[u8],
    config: &[u8],
) -> Option<Box<ConfigInstance>> {
    let Ok(name) = std::str::from_utf8(name) else {
        log(
            LogLevel::Error,
            &format!(
                "rust_module: filter name {:?} is not valid UTF-8; config rejected",
                String::from_utf8_lossy(name)
            ),
        );
        return None;
    };
    let panic_counter = match envoy.define_counter(PANIC_COUNTER) {
        Ok(id) => Some(id),
        Err(e) => {
            log(
                LogLevel::Warn,
                &format!(
                    "rust_module: filter '{name}': cannot define counter {PANIC_COUNTER}: {e}"
                ),
            );
            None
        }
    };
    match guarded(|| (module.new_filter_config)(envoy, name, config)) {
        Ok(Ok(factory)) => Some(Box::new(ConfigInstance {
            factory,
            shared: Arc::new(ConfigShared {
                name: name.to_string(),
                panic_counter,
            }),
        })),
        Ok(Err(msg)) => {
            log(
                LogLevel::Error,
                &format!("rust_module: filter '{name}' rejected its config: {msg}"),
            );
            None
        }
        Err(msg) => {
            log(
                LogLevel::Error,
                &format!(
                    "rust_module: filter '{name}' panicked while loading its config: {msg}; config rejected"
                ),
            );
            None
        }
    }
}

/// `per_route_config_new`: run the module's per-route factory.
pub(crate) fn new_per_route_config(
    module: &Module,
    name: &[u8],
    config: &[u8],
) -> Option<Box<PerRouteConfig>> {
    let Ok(name) = std::str::from_utf8(name) else {
        log(
            LogLevel::Error,
            &format!(
                "rust_module: per-route config name {:?} is not valid UTF-8; config rejected",
                String::from_utf8_lossy(name)
            ),
        );
        return None;
    };
    match guarded(|| (module.new_per_route_config)(name, config)) {
        Ok(Ok(cfg)) => Some(Box::new(cfg)),
        Ok(Err(msg)) => {
            log(
                LogLevel::Error,
                &format!("rust_module: per-route config '{name}' rejected its config: {msg}"),
            );
            None
        }
        Err(msg) => {
            log(
                LogLevel::Error,
                &format!(
                    "rust_module: per-route config '{name}' panicked while loading: {msg}; config rejected"
                ),
            );
            None
        }
    }
}
