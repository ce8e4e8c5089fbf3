//! A safe Rust SDK over Envoy's dynamic-module C ABI, for HTTP filters.
//!
//! A cdylib registers its entry points once:
//!
//! ```ignore
//! envoy_module::declare_module!(envoy_module::Module {
//!     new_filter_config: my_filter_config,
//!     new_per_route_config: my_per_route_config,
//! });
//! ```
//!
//! The macro exports every `envoy_dynamic_module_on_*` hook the target Envoy looks up; the hooks
//! catch panics, translate raw pointers into the safe traits of [`api`], and answer Envoy.
//!
//! # Targets
//! The target Envoy is a cargo feature: `envoy-1-36` (1.36.3/1.36.4, per-direction API),
//! `envoy-1-37` (default), `envoy-1-38` (1.38, 1.39) and `envoy-1-40` (unified API). Cargo unifies
//! features, so the default `envoy-1-37` is often enabled alongside an explicit choice: any other
//! target feature takes precedence over `envoy-1-37`; enabling two of the others is a compile error.
//! `ENVOY_ABI_VERSION` set at build time overrides the ABI string returned to Envoy (for a patch
//! release whose header hash differs from the minor's first release).

pub mod api;
pub mod testing;

mod callbacks;
mod hooks;
mod runtime;
mod stream_hooks;
mod target;

#[cfg(feature = "envoy-1-36")]
mod abi_1_36;
#[cfg(feature = "envoy-1-36")]
use abi_1_36 as abi;

#[cfg(not(feature = "envoy-1-36"))]
mod abi_1_37;
#[cfg(not(feature = "envoy-1-36"))]
use abi_1_37 as abi;

pub use api::*;
pub use target::{abi_version, target_envoy};

/// Names of the `envoy_dynamic_module_callback_*` symbols this target resolves in Envoy at load
/// time; a missing one makes `on_program_init` fail with a message naming it.
pub fn required_callbacks() -> &'static [&'static str] {
    abi::CALLBACK_NAMES
}

/// Names of the `envoy_dynamic_module_on_*` hooks [`declare_module!`] exports for this target.
pub fn exported_hooks() -> &'static [&'static str] {
    abi::EXPORTED_HOOKS
}

/// Name of the counter, defined in every filter config, that counts caught panics. Envoy shows it
/// as `dynamicmodulescustom.rust_module_panics`.
pub const PANIC_COUNTER: &str = "rust_module_panics";

/// Response code details of the local reply sent when a filter panicked.
pub const PANIC_DETAILS: &str = "rust_module_panic";

/// Whether a message at `level` would be logged (always true when not running inside Envoy).
pub fn log_enabled(level: LogLevel) -> bool {
    abi::log_enabled(level).unwrap_or(true)
}

/// Log through Envoy's `dynamic_modules` logger; falls back to stderr outside Envoy.
pub fn log(level: LogLevel, message: &str) {
    if !abi::log(level, message) {
        eprintln!("[{level:?}] {message}");
    }
}

/// Log with `format!` arguments, formatting only when the level is enabled.
#[macro_export]
macro_rules! log_at {
    ($level:expr, $($arg:tt)+) => {{
        let level = $level;
        if $crate::log_enabled(level) {
            $crate::log(level, &::std::format!($($arg)+));
        }
    }};
}

#[macro_export]
macro_rules! log_trace { ($($arg:tt)+) => { $crate::log_at!($crate::LogLevel::Trace, $($arg)+) }; }
#[macro_export]
macro_rules! log_debug { ($($arg:tt)+) => { $crate::log_at!($crate::LogLevel::Debug, $($arg)+) }; }
#[macro_export]
macro_rules! log_info { ($($arg:tt)+) => { $crate::log_at!($crate::LogLevel::Info, $($arg)+) }; }
#[macro_export]
macro_rules! log_warn { ($($arg:tt)+) => { $crate::log_at!($crate::LogLevel::Warn, $($arg)+) }; }
#[macro_export]
macro_rules! log_error { ($($arg:tt)+) => { $crate::log_at!($crate::LogLevel::Error, $($arg)+) }; }

/// Register the module's entry points and export Envoy's hooks from the calling cdylib.
///
/// Invoke exactly once, at the crate root of the cdylib, with a constant [`Module`] (or the fields
/// of one). The hooks are emitted into the calling crate so the final shared object exports them
/// no matter how the linker treats symbols of dependencies; they only forward to this crate.
#[macro_export]
macro_rules! declare_module {
    (Module { $($fields:tt)* }) => {
        $crate::__envoy_module_hooks!($crate::Module { $($fields)* });
    };
    ($module:expr $(,)?) => {
        $crate::__envoy_module_hooks!($module);
    };
}

/// Items the macros expand to; not a stable API.
#[doc(hidden)]
pub mod __private {
    pub use crate::abi::hooks::*;
    pub use crate::abi::{EnvoyBuffer, EnvoyHttpHeader};
    pub use crate::hooks::*;
    pub use std::ffi::{c_char, c_void};
}

#[cfg(test)]
mod tests {
    #[test]
    fn outside_envoy_every_callback_is_missing_and_logging_falls_back() {
        let missing = crate::abi::Callbacks::resolve()
            .err()
            .expect("no Envoy in a test binary");
        assert_eq!(missing, crate::required_callbacks());
        assert!(
            crate::required_callbacks()
                .iter()
                .all(|n| n.starts_with("envoy_dynamic_module_callback_"))
        );
        assert!(crate::log_enabled(crate::LogLevel::Trace));
        crate::log(crate::LogLevel::Info, "stderr fallback");
    }

    #[test]
    fn exported_hooks_cover_the_required_ones() {
        let hooks = crate::exported_hooks();
        for required in [
            "envoy_dynamic_module_on_program_init",
            "envoy_dynamic_module_on_http_filter_config_new",
            "envoy_dynamic_module_on_http_filter_request_headers",
            "envoy_dynamic_module_on_http_filter_http_callout_done",
            "envoy_dynamic_module_on_http_filter_scheduled",
        ] {
            assert!(hooks.contains(&required), "{required}");
        }
    }
}
