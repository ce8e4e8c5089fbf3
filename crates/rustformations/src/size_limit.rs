//! `request-size-limit`: answers `413 Payload Too Large` to a request whose body is larger than
//! `max_bytes`, before the upstream sees it. The example filter of `docs/writing-a-filter.md`.
//!
//! Config (a JSON string): `{"max_bytes": 1024}`. A request announcing a larger `content-length`
//! is refused in the headers callback. A request without one (chunked) has its headers held back
//! and its body buffered until it is complete or over the limit.

use envoy_module::{
    BodyStatus, CounterId, Direction, EnvoyFilterConfig, EnvoyHttpFilter, HeaderKind,
    HeadersStatus, Hooks, HttpFilter, HttpFilterConfig,
};
use serde::Deserialize;

use crate::registry::Filter;

/// The name Envoy's `filter_name` selects this filter by.
pub const FILTER_NAME: &str = "request-size-limit";
/// Its entry in the module's table of filters (`BUILT_IN_FILTERS` in lib.rs).
pub const FILTER: Filter = Filter::new(FILTER_NAME, new_config);
/// Counts refused requests; Envoy shows it as `dynamicmodulescustom.request_size_limit.rejected`.
pub const REJECTED_COUNTER: &str = "request_size_limit.rejected";
/// The local reply's response code details (in access logs as `%RESPONSE_CODE_DETAILS%`).
pub const DETAILS: &str = "request_size_limit_exceeded";

/// The parsed config, shared by every stream of one filter config.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    max_bytes: u64,
}

/// Parses the config once, when Envoy loads it; an `Err` makes Envoy reject the config.
pub fn new_config(
    envoy: &mut dyn EnvoyFilterConfig,
    config: &[u8],
) -> Result<Box<dyn HttpFilterConfig>, String> {
    let settings: Settings = crate::json_object::from_slice(config)
        .map_err(|e| format!("{FILTER_NAME}: expected {{\"max_bytes\": <number>}}: {e}"))?;
    Ok(Box::new(SizeLimitConfig {
        max_bytes: settings.max_bytes,
        rejected: envoy.define_counter(REJECTED_COUNTER)?,
    }))
}

struct SizeLimitConfig {
    max_bytes: u64,
    rejected: CounterId,
}

impl HttpFilterConfig for SizeLimitConfig {
    fn new_filter(&self) -> Box<dyn HttpFilter> {
        Box::new(SizeLimit {
            max_bytes: self.max_bytes,
            rejected: self.rejected,
        })
    }
}

/// One stream's filter.
struct SizeLimit {
    max_bytes: u64,
    rejected: CounterId,
}

impl SizeLimit {
    fn reject(&self, envoy: &mut dyn EnvoyHttpFilter) {
        envoy.increment_counter(self.rejected, 1);
        let body = format!("request body larger than {} bytes\n", self.max_bytes);
        envoy.send_local_reply(
            413,
            &[("content-type", b"text/plain")],
            body.as_bytes(),
            DETAILS,
        );
    }
}

impl HttpFilter for SizeLimit {
    fn hooks(&self) -> Hooks {
        // Only the request matters: Envoy's response hooks return before reaching the filter.
        Hooks::REQUEST_HEADERS | Hooks::REQUEST_BODY
    }

    fn on_request_headers(
        &mut self,
        envoy: &mut dyn EnvoyHttpFilter,
        end_of_stream: bool,
    ) -> HeadersStatus {
        if end_of_stream {
            return HeadersStatus::Continue; // no body at all
        }
        let announced = envoy
            .last_header(HeaderKind::RequestHeaders, "content-length")
            .and_then(|v| std::str::from_utf8(v).ok()?.trim().parse::<u64>().ok());
        match announced {
            Some(n) if n > self.max_bytes => {
                self.reject(envoy);
                HeadersStatus::StopIteration
            }
            // Envoy itself holds the body to the announced length.
            Some(_) => HeadersStatus::Continue,
            // Chunked: hold the headers until the body is known to fit.
            None => HeadersStatus::StopIteration,
        }
    }

    fn on_request_body(
        &mut self,
        envoy: &mut dyn EnvoyHttpFilter,
        end_of_stream: bool,
    ) -> BodyStatus {
        if envoy.body_len(Direction::Request) as u64 > self.max_bytes {
            self.reject(envoy);
            return BodyStatus::StopIterationNoBuffer;
        }
        if end_of_stream {
            BodyStatus::Continue
        } else {
            BodyStatus::StopIterationAndBuffer
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_module::testing::{FakeEnvoy, FakeFilterConfigEnvoy};

    fn filter(config: &str) -> (Box<dyn HttpFilter>, CounterId) {
        let mut envoy = FakeFilterConfigEnvoy::new();
        let config = new_config(&mut envoy, config.as_bytes()).expect("valid config");
        let rejected = envoy.counter_id(REJECTED_COUNTER).expect("counter defined");
        (config.new_filter(), rejected)
    }

    #[test]
    fn a_request_announcing_too_large_a_body_gets_413() {
        let (mut f, rejected) = filter(r#"{"max_bytes": 10}"#);
        let mut envoy = FakeEnvoy::with_request_headers([("content-length", "11")]);
        assert_eq!(
            f.on_request_headers(&mut envoy, false),
            HeadersStatus::StopIteration
        );
        let reply = envoy.local_reply.as_ref().expect("a local reply");
        assert_eq!(reply.status, 413);
        assert_eq!(reply.details, DETAILS);
        assert_eq!(reply.body, b"request body larger than 10 bytes\n");
        assert_eq!(envoy.counter(rejected), 1);
    }

    #[test]
    fn a_request_within_the_limit_or_without_body_passes() {
        let (mut f, rejected) = filter(r#"{"max_bytes": 10}"#);
        let mut envoy = FakeEnvoy::with_request_headers([("content-length", "10")]);
        assert_eq!(
            f.on_request_headers(&mut envoy, false),
            HeadersStatus::Continue
        );
        let mut get = FakeEnvoy::new();
        assert_eq!(
            f.on_request_headers(&mut get, true),
            HeadersStatus::Continue
        );
        assert!(envoy.local_reply.is_none() && get.local_reply.is_none());
        assert_eq!(envoy.counter(rejected), 0);
    }

    #[test]
    fn a_chunked_body_is_held_until_it_fits_or_overflows() {
        let (mut f, _) = filter(r#"{"max_bytes": 10}"#);
        let mut envoy = FakeEnvoy::new();
        assert_eq!(
            f.on_request_headers(&mut envoy, false),
            HeadersStatus::StopIteration
        );
        envoy.request_body = b"12345".to_vec();
        assert_eq!(
            f.on_request_body(&mut envoy, false),
            BodyStatus::StopIterationAndBuffer
        );
        envoy.request_body = b"1234567890".to_vec();
        assert_eq!(f.on_request_body(&mut envoy, true), BodyStatus::Continue);
        assert!(envoy.local_reply.is_none());

        let (mut f, rejected) = filter(r#"{"max_bytes": 10}"#);
        let mut envoy = FakeEnvoy::new();
        f.on_request_headers(&mut envoy, false);
        envoy.request_body = b"12345678901".to_vec();
        assert_eq!(
            f.on_request_body(&mut envoy, false),
            BodyStatus::StopIterationNoBuffer
        );
        assert_eq!(envoy.local_reply.as_ref().map(|r| r.status), Some(413));
        assert_eq!(envoy.counter(rejected), 1);
    }

    #[test]
    fn a_bad_config_is_refused_with_the_expected_shape() {
        for bad in [
            "",
            "{}",
            r#"{"max_bytes": -1}"#,
            r#"{"max_bytes": 1, "x": 2}"#,
            "[1]",
            "[]",
            r#""x""#,
            "1",
        ] {
            let mut envoy = FakeFilterConfigEnvoy::new();
            let err = new_config(&mut envoy, bad.as_bytes())
                .err()
                .expect("refused");
            assert!(err.contains(r#"{"max_bytes": <number>}"#), "{err}");
        }
    }
}
