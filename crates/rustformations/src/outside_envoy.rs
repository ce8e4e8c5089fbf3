//! What a host running the module's filters outside Envoy (the command-line tool, over the fake
//! Envoy) decides that the module otherwise takes from Envoy's process: the kgateway release and
//! where `env()` reads (compile options), the marker header, and the clock of `%START_TIME%`.
//!
//! Set once per process, before any config is loaded: configs with the same bytes share one
//! compiled transformation, so every compile in a process must use the same options. Inside Envoy
//! nothing sets them and each falls back to the environment, as before.

use std::cell::RefCell;
use std::sync::OnceLock;
use std::time::SystemTime;

use transformations::marker::{self, Marker};
use transformations::{Options, Warning};

/// The choices of a host outside Envoy.
#[derive(Debug, Clone)]
pub struct OutsideEnvoyOptions {
    /// How transformations compile: the kgateway release and the `env()` lookup.
    pub compile: Options,
    /// The marker header `rustformation` adds to responses it handled; `None`: off.
    pub marker: Option<Marker>,
    /// The start time of every stream (`%START_TIME%`); `None`: the clock, as in Envoy.
    pub start_time: Option<SystemTime>,
    /// Keep what the filters report on this thread for [`take_reports`] (besides counting and
    /// logging it, as always).
    pub keep_reports: bool,
}

/// What the filters reported on one thread: the warnings they counted and logged, and why one
/// answered with a local reply.
#[derive(Debug, Default)]
pub struct Reports {
    pub warnings: Vec<Warning>,
    pub reply_reason: Option<String>,
}

static OPTIONS: OnceLock<OutsideEnvoyOptions> = OnceLock::new();

thread_local! {
    static REPORTS: RefCell<Reports> = RefCell::new(Reports::default());
}

/// Sets the options of this process. Refused once set, or once a transformation was compiled
/// (it would keep the options it was compiled with for every config with the same bytes).
pub fn set_outside_envoy_options(options: OutsideEnvoyOptions) -> Result<(), String> {
    if crate::transform_config::TRANSFORMATIONS.len() + crate::transform_config::SMART_HEADERS.len()
        > 0
    {
        return Err("outside-Envoy options must be set before any config is loaded".into());
    }
    OPTIONS
        .set(options)
        .map_err(|_| "outside-Envoy options are set once per process".into())
}

/// What the filters reported on this thread since the last call (only with
/// [`OutsideEnvoyOptions::keep_reports`]).
pub fn take_reports() -> Reports {
    REPORTS.with(|r| std::mem::take(&mut *r.borrow_mut()))
}

/// The options transformations compile with: the host's, or in Envoy the release this process
/// follows and its environment.
pub(crate) fn compile_options() -> Result<Options, String> {
    match OPTIONS.get() {
        Some(options) => Ok(options.compile.clone()),
        None => Ok(Options {
            release: crate::release::current()?,
            ..Options::default()
        }),
    }
}

/// The marker header: the host's, or in Envoy the one the environment asks for.
pub(crate) fn marker() -> Result<Option<Marker>, String> {
    match OPTIONS.get() {
        Some(options) => Ok(options.marker.clone()),
        None => marker::of_process(),
    }
}

/// The start time of a stream starting now.
pub(crate) fn stream_start_time() -> SystemTime {
    OPTIONS
        .get()
        .and_then(|options| options.start_time)
        .unwrap_or_else(SystemTime::now)
}

fn keeps_reports() -> bool {
    OPTIONS.get().is_some_and(|options| options.keep_reports)
}

/// Keeps `warning` for [`take_reports`] when the host asked for it.
pub(crate) fn report_warning(warning: &Warning) {
    if keeps_reports() {
        REPORTS.with(|r| r.borrow_mut().warnings.push(warning.clone()));
    }
}

/// Keeps why a filter answered with a local reply for [`take_reports`] when the host asked.
pub(crate) fn report_reply_reason(reason: &dyn std::fmt::Display) {
    if keeps_reports() {
        REPORTS.with(|r| r.borrow_mut().reply_reason = Some(reason.to_string()));
    }
}
