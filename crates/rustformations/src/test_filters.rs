//! Filters that exist only to prove the failure behaviour end to end. They are refused unless
//! the Envoy process runs with `RUST_MODULE_TEST_FILTERS=1`, so no production config can enable
//! them by accident.

use envoy_module::{
    BodyStatus, EnvoyFilterConfig, EnvoyHttpFilter, HeaderKind, HeadersStatus, HttpFilter,
    HttpFilterConfig, PerRouteConfig,
};
use serde::Deserialize;
use transformations::Options;

use crate::registry::{Filter, LoadError, LoadedConfig};

pub const PANIC_FILTER: &str = "test-panic";

/// Panics where its config says; off unless `RUST_MODULE_TEST_FILTERS=1`.
pub const PANIC: Filter = Filter::new(PANIC_FILTER, new_config)
    .with_per_route_config(new_per_route_config)
    .with_loader(load)
    .test_only();

fn new_config(
    _envoy: &mut dyn EnvoyFilterConfig,
    config: &[u8],
) -> Result<Box<dyn HttpFilterConfig>, String> {
    let panic_config = parse(config)?;
    if panic_config.panic_on == PanicPoint::Config {
        panic!("test-panic: provoked panic in config creation");
    }
    Ok(Box::new(panic_config))
}

fn new_per_route_config(config: &[u8]) -> Result<PerRouteConfig, String> {
    let panic_config = parse(config)?;
    if panic_config.panic_on == PanicPoint::PerRouteConfig {
        panic!("test-panic: provoked panic in per-route config creation");
    }
    Err("test-panic has no per-route config".into())
}

fn load(config: &[u8], _per_route: bool, _options: &Options) -> Result<LoadedConfig, LoadError> {
    parse(config)?;
    Ok(LoadedConfig::Other)
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

#[derive(Debug, Clone)]
pub struct PanicConfig {
    pub panic_on: PanicPoint,
    /// Only requests carrying this header panic, so the next request shows Envoy still serves.
    pub when_header: Option<String>,
}

pub fn parse(config: &[u8]) -> Result<PanicConfig, String> {
    /// `panic_on` read in a second step, so its error names the field (serde_json does not).
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Raw {
        panic_on: serde_json::Value,
        #[serde(default)]
        when_header: Option<String>,
    }
    let raw: Raw = crate::json_object::from_slice(config)
        .map_err(|e| format!("invalid test-panic config: {e}"))?;
    let panic_on = PanicPoint::deserialize(raw.panic_on)
        .map_err(|e| format!("invalid test-panic config at panic_on: {e}"))?;
    Ok(PanicConfig {
        panic_on,
        when_header: raw.when_header,
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_names_the_field_of_a_bad_panic_point() {
        let err = parse(br#"{"panic_on": "never"}"#).unwrap_err();
        assert!(
            err.contains("at panic_on") && err.contains("never"),
            "{err}"
        );
        assert!(parse(br#"{"panic_on": "config", "x": 1}"#).is_err());
        assert!(parse(b"").is_err());
        let err = parse(br#"["config"]"#).unwrap_err();
        assert!(err.contains("expected a JSON object"), "{err}");
        let ok = parse(br#"{"panic_on": "response_body", "when_header": "x-p"}"#).unwrap();
        assert_eq!(ok.panic_on, PanicPoint::ResponseBody);
        assert_eq!(ok.when_header.as_deref(), Some("x-p"));
    }
}
