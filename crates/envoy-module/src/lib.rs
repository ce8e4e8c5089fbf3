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
//! The macro exports every `envoy_dynamic_module_on_*` hook any supported Envoy looks up; the hooks
//! catch panics, translate raw pointers into the safe traits of [`api`], and answer Envoy.
//!
//! # Envoy versions
//! One build serves Envoy 1.36.3 to 1.40: `on_program_init` detects the API family of the Envoy it
//! is loaded into from the callbacks that Envoy exports, resolves that family's callbacks once,
//! and returns the ABI string that family expects ([`Family`]). The environment variable
//! `ENVOY_ABI_VERSION` of the Envoy process replaces that string (for a patch release whose
//! string differs). An Envoy the module cannot serve gets one line naming its detected family, what
//! is supported and the override, and the load is refused.
//!
//! # Layout
//! - `api.rs`: the safe traits and types a filter sees ([`api`]);
//! - `exports.rs`: the `extern "C"` hooks [`declare_module!`] emits into the module;
//! - `hooks.rs`: the hooks' bodies, the same for every Envoy;
//! - `runtime/`: configs, streams and their memory, panics and counters behind the hooks;
//! - `target.rs`: the supported Envoy families and their detection ([`Family`]);
//! - `callbacks.rs`: resolving a family's callback table with `dlsym`;
//! - `abi.rs`: `Callbacks`, the running family's table (`PerDirectionCallbacks` or
//!   `UnifiedCallbacks`), and what both families share;
//! - `abi_1_36.rs`, `abi_1_37.rs`: Envoy's side of a stream and a config over each family's C API;
//! - `testing.rs`: the in-memory fake Envoy (the `testing` feature).

pub mod api;
/// The in-memory fake Envoy for unit tests; behind the `testing` feature, so a shipped module
/// carries none of it.
#[cfg(any(test, feature = "testing"))]
pub mod testing;

mod abi;
mod abi_1_36;
mod abi_1_37;
mod callbacks;
mod exports;
mod hooks;
mod runtime;
mod target;

pub use api::*;
pub use target::{ABI_OVERRIDE_ENV, Family, SUPPORTED};

/// Names of the `envoy_dynamic_module_on_*` hooks [`declare_module!`] exports: the union of the
/// hooks every supported Envoy looks up.
pub fn exported_hooks() -> &'static [&'static str] {
    abi::EXPORTED_HOOKS
}

/// The API family of the Envoy the module was loaded into; `None` outside Envoy (unit tests, a
/// command-line tool) or before Envoy initialised the module.
pub fn running_family() -> Option<Family> {
    abi::host().map(|host| host.family)
}

/// Whether Envoy holds any per-route config of this module now. While it holds none, no route
/// can carry one, and [`EnvoyHttpFilter::per_route_config`] answers None on every stream.
pub fn per_route_configs_present() -> bool {
    runtime::any_per_route_config()
}

/// The bytes as text when they are all ASCII, as header values almost always are: checking
/// that costs less than a full UTF-8 validation of a short value. `None` means "validate as UTF-8".
#[inline]
pub fn ascii_str(bytes: &[u8]) -> Option<&str> {
    if bytes.is_ascii() {
        // SAFETY: ASCII bytes are valid UTF-8.
        Some(unsafe { std::str::from_utf8_unchecked(bytes) })
    } else {
        None
    }
}

/// Name of the counter, defined in every filter config, that counts caught panics. Envoy shows it
/// as `dynamicmodulescustom.rust_module_panics`.
pub const PANIC_COUNTER: &str = "rust_module_panics";

/// Response code details of the local reply sent when a filter panicked.
pub const PANIC_DETAILS: &str = "rust_module_panic";

/// Whether a message at `level` would be logged: Envoy's logger decides; outside Envoy, the
/// level set by [`set_log_level_outside_envoy`] (every level unless a host chose).
pub fn log_enabled(level: LogLevel) -> bool {
    abi::log_enabled(level).unwrap_or_else(|| logged_outside_envoy(level))
}

/// Log through Envoy's `dynamic_modules` logger; outside Envoy, to stderr from the level set by
/// [`set_log_level_outside_envoy`].
pub fn log(level: LogLevel, message: &str) {
    if !abi::log(level, message) && logged_outside_envoy(level) {
        eprintln!("[{level:?}] {message}");
    }
}

/// The lowest level logged to stderr outside Envoy, or `None` for nothing: a host running the
/// filters by itself (a command-line tool) keeps its output its own. Inside Envoy, Envoy decides.
pub fn set_log_level_outside_envoy(level: Option<LogLevel>) {
    let threshold = level.map_or(LOG_NOTHING, |level| level as u8);
    OUTSIDE_ENVOY_LOG_THRESHOLD.store(threshold, std::sync::atomic::Ordering::Relaxed);
}

const LOG_NOTHING: u8 = u8::MAX;
static OUTSIDE_ENVOY_LOG_THRESHOLD: std::sync::atomic::AtomicU8 =
    std::sync::atomic::AtomicU8::new(LogLevel::Trace as u8);

fn logged_outside_envoy(level: LogLevel) -> bool {
    level as u8 >= OUTSIDE_ENVOY_LOG_THRESHOLD.load(std::sync::atomic::Ordering::Relaxed)
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
    pub use crate::abi::{EnvoyBuffer, EnvoyHttpHeader};
    pub use crate::hooks::*;
    pub use std::ffi::{c_char, c_void};
}

#[cfg(test)]
mod tests {
    #[test]
    fn outside_envoy_no_family_is_detected_and_logging_falls_back() {
        assert_eq!(crate::target::detect(crate::callbacks::exported), None);
        for family in crate::Family::ALL {
            let missing = crate::abi::install(family)
                .err()
                .expect("no Envoy in a test binary");
            assert_eq!(missing, family.required_callbacks());
            assert!(
                missing
                    .iter()
                    .all(|n| n.starts_with("envoy_dynamic_module_callback_"))
            );
        }
        assert!(crate::abi::host().is_none());
        assert!(crate::hooks::program_init().is_null());
        assert!(crate::log_enabled(crate::LogLevel::Trace));
        crate::log(crate::LogLevel::Info, "stderr fallback");

        // A host outside Envoy chooses what reaches stderr (in this one test: the level is global).
        use crate::LogLevel::{Critical, Info, Trace, Warn};
        crate::set_log_level_outside_envoy(Some(Warn));
        assert!(!crate::log_enabled(Info));
        assert!(crate::log_enabled(Warn) && crate::log_enabled(Critical));
        crate::set_log_level_outside_envoy(None);
        assert!(!crate::log_enabled(Critical));
        crate::log(Critical, "not shown");
        crate::set_log_level_outside_envoy(Some(Trace));
        assert!(crate::log_enabled(Trace));
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
            "envoy_dynamic_module_on_http_filter_http_stream_reset",
            "envoy_dynamic_module_on_http_filter_local_reply",
        ] {
            assert!(hooks.contains(&required), "{required}");
        }
    }
}
