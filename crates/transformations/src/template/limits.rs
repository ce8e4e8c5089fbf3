//! The render budget ([`Limits`]), the compile [`Options`] that carry it, and the meter that
//! enforces it around a compile or a render.

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use minijinja::budget::{self, Meter, Tripped};

use crate::release::KgatewayRelease;

/// Default MiniJinja fuel per rendered value (roughly instructions; data costs about one unit
/// per 64 bytes). Far above what a sane transformation uses, low enough to stop a runaway loop.
pub const DEFAULT_FUEL: u64 = 1_000_000;
/// Default cap on one rendered header or dynamic-metadata value.
pub const MAX_HEADER_VALUE_BYTES: usize = 64 * 1024;
/// Default cap on one rendered body.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// Default bytes the templates of one request side (or one value compiled at load time) may
/// produce or copy: strings built by `*`, `~`, `+`, filters, captured output, our functions.
pub const DEFAULT_RENDER_BYTES: u64 = 64 * 1024 * 1024;
/// Default time the templates of one request side (or one value compiled at load time) may run.
pub const DEFAULT_RENDER_TIME: Duration = Duration::from_millis(50);
/// Environment variable setting [`Limits::render_bytes`] (a byte count).
pub const RENDER_BYTES_ENV: &str = "RUSTFORMATION_RENDER_MAX_BYTES";
/// Environment variable setting [`Limits::render_time`] (milliseconds).
pub const RENDER_TIME_ENV: &str = "RUSTFORMATION_RENDER_MAX_MS";

/// The render budget. Exceeding any part of it is a render error for that value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Limits {
    pub fuel: u64,
    pub max_header_value_bytes: usize,
    pub max_body_bytes: usize,
    /// Bytes produced or copied per request side by templates (checked before allocating).
    pub render_bytes: u64,
    /// Time per request side spent in templates (checked every 1024 instructions and every
    /// MiB charged, and bounding `regex_extract`).
    pub render_time: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            fuel: DEFAULT_FUEL,
            max_header_value_bytes: MAX_HEADER_VALUE_BYTES,
            max_body_bytes: MAX_BODY_BYTES,
            render_bytes: DEFAULT_RENDER_BYTES,
            render_time: DEFAULT_RENDER_TIME,
        }
    }
}

impl Limits {
    /// The defaults with [`RENDER_BYTES_ENV`] and [`RENDER_TIME_ENV`] applied, read from the
    /// process environment once; an unusable setting is an error naming the variable.
    pub fn from_env() -> Result<Limits, String> {
        static FROM_ENV: OnceLock<Result<Limits, String>> = OnceLock::new();
        FROM_ENV
            .get_or_init(|| Limits::from_lookup(&|n| std::env::var(n).ok()))
            .clone()
    }

    /// The defaults with the two settings read through `lookup`.
    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Limits, String> {
        let mut limits = Limits::default();
        let read = |name: &str| -> Result<Option<u64>, String> {
            match lookup(name) {
                None => Ok(None),
                Some(v) if v.trim().is_empty() => Ok(None),
                Some(v) => match v.trim().parse::<u64>() {
                    Ok(n) if n > 0 => Ok(Some(n)),
                    _ => Err(format!("{name}={v:?} is not a positive integer")),
                },
            }
        };
        if let Some(bytes) = read(RENDER_BYTES_ENV)? {
            limits.render_bytes = bytes;
        }
        if let Some(ms) = read(RENDER_TIME_ENV)? {
            limits.render_time = Duration::from_millis(ms);
        }
        Ok(limits)
    }

    pub(crate) fn meter(&self) -> Meter {
        Meter::new(self.render_bytes, self.render_time)
    }
}

/// How `env(name)` reads the environment.
pub type EnvLookup = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// Compile options.
#[derive(Clone)]
pub struct Options {
    pub limits: Limits,
    /// Defaults to the process environment (Envoy's, when loaded as a module).
    pub env: EnvLookup,
    /// The kgateway release whose semantics the transformation follows (default v2.3).
    pub release: KgatewayRelease,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            limits: Limits::from_env().unwrap_or_default(),
            env: process_env(),
            release: KgatewayRelease::default(),
        }
    }
}

/// The lookup of the process environment: one for the process, so configs compiled with the
/// default options can share their state (`context::shared_config_state`).
fn process_env() -> EnvLookup {
    static PROCESS_ENV: OnceLock<EnvLookup> = OnceLock::new();
    PROCESS_ENV
        .get_or_init(|| Arc::new(|name| std::env::var(name).ok()))
        .clone()
}

impl fmt::Debug for Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Options")
            .field("limits", &self.limits)
            .field("release", &self.release)
            .finish_non_exhaustive()
    }
}

/// Runs `f` with `meter` installed on this thread; returns its result and the meter after it.
pub(crate) fn metered<R>(meter: Meter, f: impl FnOnce() -> R) -> (R, Meter) {
    /// Puts the previous meter back, also when `f` panics.
    struct Restore(Option<Option<Meter>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            if let Some(previous) = self.0.take() {
                budget::install(previous);
            }
        }
    }
    let mut restore = Restore(Some(budget::install(Some(meter))));
    let result = f();
    let previous = restore.0.take().flatten();
    let after = budget::install(previous).unwrap_or(meter);
    (result, after)
}

/// What a user reads when the render budget trips (after "render budget exceeded: ").
pub(crate) fn budget_message(why: Tripped, limits: &Limits) -> String {
    match why {
        Tripped::Bytes => format!(
            "more than {} bytes produced or copied ({RENDER_BYTES_ENV})",
            limits.render_bytes
        ),
        Tripped::Time => format!(
            "more than {} ms of template work ({RENDER_TIME_ENV})",
            limits.render_time.as_millis()
        ),
    }
}
