//! Filters that exist only to prove the failure behaviour end to end. They are refused unless
//! the Envoy process runs with `RUST_MODULE_TEST_FILTERS=1`, so no production config can enable
//! them by accident.

use envoy_module::{
    BodyStatus, EnvoyHttpFilter, HeaderKind, HeadersStatus, HttpFilter, HttpFilterConfig,
};
use serde::Deserialize;

pub const TEST_FILTERS_ENV: &str = "RUST_MODULE_TEST_FILTERS";
pub const PANIC_FILTER: &str = "test-panic";

pub fn enabled() -> bool {
    std::env::var(TEST_FILTERS_ENV).is_ok_and(|v| v == "1")
}

/// Where the `test-panic` filter panics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PanicPoint {
    Config,
    PerRouteConfig,
    RequestHeaders,
    RequestBody,
    ResponseHeaders,
    ResponseBody,
    StreamComplete,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PanicConfig {
    pub panic_on: PanicPoint,
    /// Only requests carrying this header panic, so the next request shows Envoy still serves.
    #[serde(default)]
    pub when_header: Option<String>,
}

pub fn parse(config: &[u8]) -> Result<PanicConfig, String> {
    serde_json::from_slice(config).map_err(|e| format!("invalid test-panic config: {e}"))
}

impl HttpFilterConfig for PanicConfig {
    fn new_filter(&self) -> Box<dyn HttpFilter> {
        Box::new(PanicFilter {
            config: self.clone(),
            armed: false,
        })
    }
}

struct PanicFilter {
    config: PanicConfig,
    armed: bool,
}

impl PanicFilter {
    fn maybe_panic(&self, point: PanicPoint) {
        if self.armed && self.config.panic_on == point {
            panic!("test-panic: provoked panic in {point:?}");
        }
    }
}

impl HttpFilter for PanicFilter {
    fn on_request_headers(
        &mut self,
        envoy: &mut dyn EnvoyHttpFilter,
        _end_of_stream: bool,
    ) -> HeadersStatus {
        self.armed = match &self.config.when_header {
            Some(name) => envoy.header(HeaderKind::RequestHeaders, name, 0).is_some(),
            None => true,
        };
        self.maybe_panic(PanicPoint::RequestHeaders);
        HeadersStatus::Continue
    }

    fn on_request_body(
        &mut self,
        _envoy: &mut dyn EnvoyHttpFilter,
        _end_of_stream: bool,
    ) -> BodyStatus {
        self.maybe_panic(PanicPoint::RequestBody);
        BodyStatus::Continue
    }

    fn on_response_headers(
        &mut self,
        _envoy: &mut dyn EnvoyHttpFilter,
        _end_of_stream: bool,
    ) -> HeadersStatus {
        self.maybe_panic(PanicPoint::ResponseHeaders);
        HeadersStatus::Continue
    }

    fn on_response_body(
        &mut self,
        _envoy: &mut dyn EnvoyHttpFilter,
        _end_of_stream: bool,
    ) -> BodyStatus {
        self.maybe_panic(PanicPoint::ResponseBody);
        BodyStatus::Continue
    }

    fn on_stream_complete(&mut self, _envoy: &mut dyn EnvoyHttpFilter) {
        self.maybe_panic(PanicPoint::StreamComplete);
    }
}
