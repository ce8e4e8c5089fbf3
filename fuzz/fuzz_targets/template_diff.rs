//! Our template layer against plain MiniJinja 2.12 (the engine kgateway v2.3's module renders
//! with): a fuzzed value, compiled as a request `set` the way the module compiles it (text and
//! markup split, `%` operators rewritten, `{{ header("x") }}` lowered to a header read, the render
//! budget and output cap), must give exactly what MiniJinja renders from the same text with the
//! same header function, or the header must be absent where MiniJinja fails, runs out of the same
//! fuel, passes the cap, or renders CR/LF/NUL (which the module never sends). The reference has
//! kgateway's pure functions too (this crate's own, as the module registers them). Left out:
//! values holding `%` (command operators are a deliberate difference), those reading what only
//! a stream has (`body`, `context`, `env`) or printing the whole context (`debug`), random
//! values, and values over the render budget of bytes and time (a deliberate difference: the
//! reference has no meter installed, so it builds what the module refuses to).
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;

#[path = "engine_panics.rs"]
mod engine_panics;
use minijinja::{AutoEscape, Environment, State};
use transformations::memory::{MemoryMessage, MemoryStreamInfo};
use transformations::{BodyMode, Limits, Options, Transformation, functions};

#[derive(Debug, Arbitrary)]
struct Input {
    value: String,
    x_a: String,
    x_b: String,
}

const LIMITS: Limits = Limits {
    fuel: 20_000,
    max_header_value_bytes: 1024,
    max_body_bytes: 16 * 1024,
    render_bytes: transformations::DEFAULT_RENDER_BYTES,
    render_time: transformations::DEFAULT_RENDER_TIME,
};

fn reference(value: &str, headers: &[(&str, &str)]) -> Option<String> {
    let mut env = Environment::new();
    env.set_fuel(Some(LIMITS.fuel));
    env.set_auto_escape_callback(|_| AutoEscape::None);
    let owned: Vec<(String, String)> = headers
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    let lookup = move |_: &State, name: &str| -> String {
        owned
            .iter()
            .rev()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    env.add_function("header", lookup.clone());
    env.add_function("request_header", lookup);
    env.add_function("substring", functions::substring);
    env.add_function("base64_encode", functions::base64_encode);
    env.add_function("base64url_encode", functions::base64url_encode);
    env.add_function("base64_decode", functions::base64_decode);
    env.add_function("base64url_decode", functions::base64url_decode);
    env.add_function("replace_with_string", functions::replace_with_string);
    env.add_function("raw_string", functions::raw_string);
    let rendered = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| env.render_str(value, ())))
        .ok()?
        .ok()?;
    let invalid = rendered.bytes().any(|b| matches!(b, b'\r' | b'\n' | b'\0'));
    (!rendered.is_empty() && !invalid && rendered.len() <= LIMITS.max_header_value_bytes)
        .then_some(rendered)
}

fuzz_target!(|input: Input| {
    engine_panics::tolerate_engine_panics();
    const LEFT_OUT: [&str; 6] = ["%", "body", "context", "env", "debug", "replace_with_random"];
    if input.value.is_empty() || LEFT_OUT.iter().any(|w| input.value.contains(w)) {
        return;
    }
    let headers = [("x-a", input.x_a.as_str()), ("x-b", input.x_b.as_str())];
    if headers.iter().any(|(_, v)| v.bytes().any(|b| matches!(b, b'\r' | b'\n' | b'\0'))) {
        return;
    }
    let config = serde_json::json!({"request": {"set": [{"name": "x-out", "value": input.value}]}});
    let options = Options {
        limits: LIMITS,
        ..Options::default()
    };
    let t = match Transformation::from_json_with(config.to_string().as_bytes(), &options) {
        Ok(t) => Some(t),
        // A constant over the render budget: refused on purpose.
        Err(e) if e.to_string().contains("render budget") => return,
        Err(_) => None,
    };
    let Some(t) = t else {
        // Refused at load: MiniJinja must refuse the text too (a syntax error), unless it is a
        // literal with CR/LF/NUL, which the module refuses on purpose.
        let literal_crlf = !["{{", "{%", "{#"].iter().any(|m| input.value.contains(m))
            && input.value.bytes().any(|b| matches!(b, b'\r' | b'\n' | b'\0'));
        assert!(
            literal_crlf || Environment::new().template_from_str(&input.value).is_err(),
            "the module refused a template MiniJinja compiles: {:?}",
            input.value
        );
        return;
    };
    let mut msg = MemoryMessage::new(&headers, "");
    let mut info = MemoryStreamInfo::default();
    // A missing JSON variable is the 400 of the contract, not a render: nothing to compare.
    let Ok(warnings) = t.apply_request(&mut msg, BodyMode::Buffered, &mut info) else {
        return;
    };
    if warnings.iter().any(|w| w.message.contains("render budget exceeded")) {
        return;
    }
    let ours = msg.header("x-out");
    let expected = reference(&input.value, &headers);
    assert_eq!(ours, expected, "value {:?}", input.value);
});
