//! Template rendering with hostile input through the pure apply API: fuzzed templates (built
//! into a valid config), fuzzed header values (any bytes: CR, LF, NUL, invalid UTF-8) and
//! fuzzed bodies (parsed as a string or as JSON). Checks what the filter promises: no panic, no
//! emitted header value with CR/LF/NUL, the output caps hold, a JSON error is the 400.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;

#[path = "engine_panics.rs"]
mod engine_panics;
use transformations::memory::{MemoryMessage, MemoryStreamInfo};
use transformations::{BodyMode, KgatewayRelease, Limits, Options, Transformation};

#[derive(Debug, Arbitrary)]
struct Input {
    set_value: String,
    add_value: String,
    body_value: String,
    as_json: bool,
    buffered: bool,
    /// kgateway v2.4's semantics (repeated headers joined) rather than v2.3's.
    v2_4: bool,
    headers: Vec<(u8, Vec<u8>)>,
    body: Vec<u8>,
}

// Header names the templates are likely to read, so fuzzed values reach them.
const NAMES: [&str; 4] = ["x-a", "x-b", "content-type", ":path"];

const LIMITS: Limits = Limits {
    // Small budgets keep each run fast; the limits themselves are what is under test.
    fuel: 20_000,
    max_header_value_bytes: 1024,
    max_body_bytes: 16 * 1024,
    // A small byte budget too, so the fuzzer reaches it.
    render_bytes: 1024 * 1024,
    render_time: transformations::DEFAULT_RENDER_TIME,
};

fuzz_target!(|input: Input| {
    engine_panics::tolerate_engine_panics();
    let config = serde_json::json!({
        "request": {
            "set": [{"name": "x-set", "value": input.set_value}],
            "add": [{"name": "x-add", "value": input.add_value}],
            "body": {"parseAs": if input.as_json { "AsJson" } else { "AsString" },
                     "value": input.body_value},
        },
        "response": {
            "set": [{"name": "x-set", "value": input.set_value}],
        }
    });
    let options = Options {
        limits: LIMITS,
        env: std::sync::Arc::new(|_| Some("env\r\nvalue".to_owned())),
        release: if input.v2_4 {
            KgatewayRelease::V2_4
        } else {
            KgatewayRelease::V2_3
        },
    };
    let Ok(t) = Transformation::from_json_with(config.to_string().as_bytes(), &options) else {
        return;
    };
    let mut request = MemoryMessage {
        headers: input
            .headers
            .iter()
            .map(|(n, v)| (NAMES[*n as usize % NAMES.len()].to_owned(), v.clone()))
            .collect(),
        body: input.body.clone(),
    };
    let snapshot = t.capture_request_headers(&request);
    let mode = if input.buffered {
        BodyMode::Buffered
    } else {
        BodyMode::HeadersOnly
    };
    let before: Vec<(String, Vec<u8>)> = request.headers.clone();
    let mut info = MemoryStreamInfo::default();
    match t.apply_request(&mut request, mode, &mut info) {
        Ok(_) => check(&request, &before, &input.body),
        Err(e) => assert_eq!(e.status(), 400),
    }
    let mut response = MemoryMessage {
        headers: vec![(":status".to_owned(), b"200".to_vec())],
        body: Vec::new(),
    };
    let before = response.headers.clone();
    if t.apply_response(&mut response, &snapshot, mode, &mut info)
        .is_ok()
    {
        check(&response, &before, &[]);
    }
});

/// Every header value we wrote is wire-safe and capped; a body we wrote is capped.
fn check(msg: &MemoryMessage, before: &[(String, Vec<u8>)], original_body: &[u8]) {
    for (name, value) in &msg.headers {
        if before.iter().any(|(n, v)| n == name && v == value) {
            continue;
        }
        assert!(
            !value.iter().any(|b| matches!(b, b'\r' | b'\n' | 0)),
            "emitted {name}: {value:?}"
        );
        if name.starts_with("x-") {
            assert!(
                value.len() <= LIMITS.max_header_value_bytes,
                "{name} too long"
            );
        }
    }
    assert!(
        msg.body == original_body || msg.body.len() <= LIMITS.max_body_bytes,
        "rendered body of {} bytes",
        msg.body.len()
    );
}
