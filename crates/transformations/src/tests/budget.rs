//! Behaviour tests: the render budget in bytes produced or copied and in time, per request side
//! and at compile time (issue 22). Each case would allocate gigabytes or run for seconds without
//! it.

use std::time::{Duration, Instant};

use crate::memory::{MemoryMessage, MemoryStreamInfo};
use crate::*;

fn set1(value: &str) -> String {
    format!(
        r#"{{"request":{{"set":[{{"name":"x-out","value":{}}}]}}}}"#,
        serde_json::to_string(value).unwrap()
    )
}

fn compile_with(json: &str, limits: Limits) -> Result<Transformation, Error> {
    let options = Options {
        limits,
        ..Options::default()
    };
    Transformation::from_json_with(json.as_bytes(), &options)
}

/// Renders `value` as a request header with `limits`: the header (None when removed), the
/// warnings and how long the side took.
fn render_with(
    value: &str,
    limits: Limits,
    headers: &[(&str, &str)],
    body: &str,
) -> (Option<String>, Vec<Warning>, Duration) {
    let t = compile_with(&set1(value), limits).unwrap_or_else(|e| panic!("{e}"));
    let mut msg = MemoryMessage::new(headers, body);
    let started = Instant::now();
    let w = t
        .apply_request(
            &mut msg,
            BodyMode::Buffered,
            &mut MemoryStreamInfo::default(),
        )
        .unwrap();
    (msg.header("x-out"), w, started.elapsed())
}

fn render(value: &str, headers: &[(&str, &str)], body: &str) -> (Option<String>, Vec<Warning>) {
    let (out, w, took) = render_with(value, Limits::default(), headers, body);
    // Wide margin: the budget is 50 ms of work, the machines are shared.
    assert!(took < Duration::from_secs(2), "{value}: {took:?}");
    (out, w)
}

/// The value's render exceeded the budget: header removed, one budget warning.
fn assert_budget(value: &str, headers: &[(&str, &str)], body: &str) -> String {
    let (out, w) = render(value, headers, body);
    assert_eq!(out, None, "{value}");
    assert_eq!(w.len(), 1, "{value}: {w:?}");
    assert_eq!(w[0].kind, WarningKind::Budget, "{value}: {w:?}");
    w[0].message.clone()
}

const MB: &str = "1000000";

#[test]
fn string_repetition_is_checked_before_allocating() {
    let m = assert_budget(
        r#"{{ ("a" * (request_header("x-n")|int))|length }}"#,
        &[("x-n", "3000000000")],
        "",
    );
    assert!(
        m.contains("bytes produced or copied") && m.contains(RENDER_BYTES_ENV),
        "{m}"
    );
    assert_budget("{{ body() * 1000 }}", &[], &"b".repeat(1_000_000));
    assert_budget(
        r#"{{ ([1, 2] * (request_header("x-n")|int))|list|length }}"#,
        &[("x-n", "100000000")],
        "",
    );
    // Within the budget, the same output as before.
    assert_eq!(
        render(r#"{{ "ab" * 3 }}"#, &[], "").0.as_deref(),
        Some("ababab")
    );
}

#[test]
fn concatenation_in_loops_is_charged_by_the_bytes_copied() {
    let hundred = "x".repeat(100);
    assert_budget(
        &format!(
            r#"{{% set ns = namespace(s="") %}}{{% for i in range(30000) %}}{{% set ns.s = ns.s ~ "{hundred}" %}}{{% endfor %}}{{{{ ns.s|length }}}}"#
        ),
        &[],
        "",
    );
    assert_budget(
        r#"{% set ns = namespace(s="ab") %}{% for i in range(29) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}"#,
        &[],
        "",
    );
    assert_budget(
        r#"{% set ns = namespace(s="ab") %}{% for i in range(29) %}{% set ns.s = ns.s + ns.s %}{% endfor %}{{ ns.s|length }}"#,
        &[],
        "",
    );
    // A small loop is fine and unchanged.
    assert_eq!(
        render(
            r#"{% set ns = namespace(s="") %}{% for i in range(3) %}{% set ns.s = ns.s ~ i %}{% endfor %}{{ ns.s }}"#,
            &[],
            ""
        )
        .0
        .as_deref(),
        Some("012")
    );
}

#[test]
fn filters_that_amplify_are_checked() {
    for value in [
        r#"{{ ("a\nb"|indent(1000000000))|length }}"#,
        r#"{% set big = "a" * 10000000 %}{% for i in range(10000) %}{% set x = big|upper %}{% endfor %}done"#,
        r#"{{ (("ab" * 1000)|replace("", "x" * 60000))|length }}"#,
        r#"{{ (("x" * 1000)|replace("x", "y" * 100000))|length }}"#,
        r#"{{ ([("a" * 1000000)] * 100)|join(",")|length }}"#,
        r#"{{ {"a": 1}|tojson(indent=1000000000) }}"#,
        r#"{{ [1]|batch(1000000000, "x")|length }}"#,
        r#"{{ [1]|slice(1000000000)|length }}"#,
        r#"{% set x %}{% for i in range(100) %}{{ "a" * 1000000 }}{% endfor %}{% endset %}{{ x|length }}"#,
    ] {
        assert_budget(value, &[], "");
    }
    assert_eq!(
        render(r#"{{ "a b"|replace(" ", "-")|upper }} {{ [1,2]|join("+") }} {{ ("x\ny"|indent(2))|replace("\n", "|") }}"#, &[], "")
            .0
            .as_deref(),
        Some("A-B 1+2 x|  y")
    );
}

#[test]
fn our_functions_are_charged_before_allocating() {
    let body = "b".repeat(1_000_000);
    let thousand = "r".repeat(1000);
    assert_budget(
        &format!(r#"{{{{ replace_with_string(body(), "", "{thousand}")|length }}}}"#),
        &[],
        &body,
    );
    assert_budget(r#"{{ replace_with_random(body(), "") }}"#, &[], &body);
    // Each call alone fits; a loop of them does not.
    for f in [
        "substring(body(), 0)",
        "base64_encode(body())",
        "raw_string(body())",
        r#"json_set("{}", "/a", body())"#,
        r#"set_query_param("/p", "q", body())"#,
    ] {
        assert_budget(
            &format!("{{% for i in range(200) %}}{{% set x = {f} %}}{{% endfor %}}done"),
            &[],
            &body,
        );
    }
}

#[test]
fn regex_extract_capture_work_is_bounded() {
    let body = "a".repeat(1_000_000);
    let m = assert_budget(
        r#"{{ regex_extract(body(), "(?s)^((?:[a-z]{1,20}){1,20})*$", 1) }}"#,
        &[],
        &body,
    );
    assert!(m.contains("regex_extract"), "{m}");
    // The whole match (group 0) needs no capture engine.
    let (out, w) = render(
        r#"{{ regex_extract(body(), "(?s)^((?:[a-z]{1,20}){1,20})*$")|length }}"#,
        &[],
        &body,
    );
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(out.as_deref(), Some(MB));
}

#[test]
fn the_time_budget_stops_work_that_copies_little() {
    let limits = Limits {
        render_time: Duration::from_millis(20),
        fuel: u64::MAX / 2,
        ..Limits::default()
    };
    let (out, w, took) = render_with(
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}x",
        limits,
        &[],
        "",
    );
    assert_eq!(out, None);
    assert_eq!(w[0].kind, WarningKind::Budget, "{w:?}");
    assert!(w[0].message.contains(RENDER_TIME_ENV), "{}", w[0].message);
    assert!(took < Duration::from_secs(2), "{took:?}");
}

#[test]
fn the_budget_is_per_side_and_a_trip_leaves_other_values_alone() {
    let json = r#"{"request":{"set":[
        {"name":"x-a","value":"{% set x = 'a' * (request_header('x-n')|int) %}{{ x|length }}"},
        {"name":"x-b","value":"{% set x = 'b' * (request_header('x-n')|int) %}{{ x|length }}"},
        {"name":"x-c","value":"plain {{ 3 }}"},
        {"name":"x-d","value":"%REQ(x-in)%"}]}}"#;
    let t = compile_with(json, Limits::default()).unwrap();
    let mut msg = MemoryMessage::new(&[("x-in", "v"), ("x-n", "40000000")], "");
    let w = t
        .apply_request(
            &mut msg,
            BodyMode::HeadersOnly,
            &mut MemoryStreamInfo::default(),
        )
        .unwrap();
    // x-a and x-b each fit in the 64 MiB alone, not together.
    assert_eq!(msg.header("x-a").as_deref(), Some("40000000"));
    assert_eq!(msg.header("x-b"), None);
    assert_eq!(msg.header("x-c").as_deref(), Some("plain 3"));
    assert_eq!(msg.header("x-d").as_deref(), Some("v"));
    assert_eq!(w.len(), 1, "{w:?}");
    assert_eq!(w[0].kind, WarningKind::Budget);
    assert_eq!(w[0].field, "request.set[1].value");
    assert!(w[0].message.contains("render budget exceeded"), "{w:?}");
    // The next request starts with a full budget.
    let mut msg = MemoryMessage::new(&[("x-in", "v"), ("x-n", "40000000")], "");
    let w2 = t
        .apply_request(
            &mut msg,
            BodyMode::HeadersOnly,
            &mut MemoryStreamInfo::default(),
        )
        .unwrap();
    assert_eq!(w2, w);
    assert!(t.first_budget_warning());
    assert!(!t.first_budget_warning(), "logged once per policy");
}

#[test]
fn constant_folding_over_the_budget_refuses_the_config() {
    let e = compile_with(
        &set1(r#"{{ ("a" * 1000000000)|length }}"#),
        Limits::default(),
    )
    .unwrap_err();
    let text = e.to_string();
    assert!(text.contains("request.set[0].value"), "{text}");
    assert!(
        text.contains("constant expression exceeds the render budget"),
        "{text}"
    );
    let e = compile_with(
        &set1(r#"{{ ("a" * 3000000000 ~ "b")|length }}"#),
        Limits::default(),
    )
    .unwrap_err();
    assert!(e.to_string().contains(RENDER_BYTES_ENV), "{e}");
    // A constant that fits is folded as before.
    assert_eq!(
        render(r#"{{ ("a" * 1000)|length }}"#, &[], "").0.as_deref(),
        Some("1000")
    );
}

#[test]
fn no_meter_means_unchanged_minijinja() {
    // Outside a metered render (plain MiniJinja users, the fuzz reference) nothing is charged.
    assert!(minijinja::budget::current().is_none());
    let env = minijinja::Environment::new();
    let out = env
        .render_str(r#"{{ ("a" * 100000000)|length }}"#, ())
        .unwrap();
    assert_eq!(out, "100000000");
}

#[test]
fn limits_from_the_environment() {
    let lookup = |pairs: &'static [(&'static str, &'static str)]| {
        move |n: &str| {
            pairs
                .iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| (*v).to_owned())
        }
    };
    let l = Limits::from_lookup(&lookup(&[])).unwrap();
    assert_eq!(l.render_bytes, 64 * 1024 * 1024);
    assert_eq!(l.render_time, Duration::from_millis(50));
    let l = Limits::from_lookup(&lookup(&[
        (RENDER_BYTES_ENV, "1048576"),
        (RENDER_TIME_ENV, " 200 "),
    ]))
    .unwrap();
    assert_eq!(l.render_bytes, 1_048_576);
    assert_eq!(l.render_time, Duration::from_millis(200));
    for bad in ["0", "-1", "64MiB", "1.5"] {
        let pairs: &'static [(&str, &str)] = Box::leak(Box::new([(RENDER_BYTES_ENV, bad)]));
        let e = Limits::from_lookup(&lookup(pairs)).unwrap_err();
        assert!(e.contains(RENDER_BYTES_ENV), "{e}");
    }
}

#[test]
fn status_must_stay_a_valid_status() {
    let json = r#"{"response":{"set":[{"name":":status","value":"{{ request_header('x-s') }}"}]}}"#;
    let t = Transformation::from_json(json.as_bytes()).unwrap();
    for (sent, kept) in [
        ("99999", "200"),
        ("0", "200"),
        ("1000", "200"),
        ("099", "200"),
        ("600", "200"),
        ("20a", "200"),
        ("", "200"),
        ("404", "404"),
        ("100", "100"),
        ("599", "599"),
    ] {
        let req = MemoryMessage::new(&[("x-s", sent)], "");
        let snapshot = t.capture_request_headers(&req);
        let mut resp = MemoryMessage::new(&[(":status", "200")], "");
        let w = t
            .apply_response(
                &mut resp,
                &snapshot,
                BodyMode::HeadersOnly,
                &mut MemoryStreamInfo::default(),
            )
            .unwrap();
        assert_eq!(resp.header(":status").as_deref(), Some(kept), "{sent:?}");
        assert_eq!(w.len(), usize::from(kept != sent), "{sent:?}: {w:?}");
        if let Some(w) = w.first() {
            assert_eq!(w.kind, WarningKind::InvalidHeaderValue);
            assert!(w.message.contains(":status"), "{}", w.message);
        }
    }
}

#[test]
fn json_nesting_limit_is_exactly_as_documented() {
    // serde_json's limit: 127 levels parse, 128 do not (docs/failure-behaviour.md).
    let json =
        r#"{"request":{"body":{"parseAs":"AsJson"},"set":[{"name":"x","value":"{{ a }}"}]}}"#;
    let t = Transformation::from_json(json.as_bytes()).unwrap();
    let nested = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    for (depth, ok) in [(127, true), (128, false)] {
        let mut msg = MemoryMessage::new(&[("content-type", "application/json")], &nested(depth));
        let r = t.apply_request(
            &mut msg,
            BodyMode::Buffered,
            &mut MemoryStreamInfo::default(),
        );
        assert_eq!(r.is_ok(), ok, "depth {depth}: {r:?}");
    }
}
