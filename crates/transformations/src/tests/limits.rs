//! Behaviour tests: the render budget.

use super::*;

#[test]
fn a_render_out_of_fuel_fails_that_value_alone() {
    let options = Options {
        limits: Limits {
            fuel: 1_000,
            ..Limits::default()
        },
        ..Options::default()
    };
    let cfg = set1("{% for i in range(100000) %}{% endfor %}x");
    let t = Transformation::from_json_with(cfg.as_bytes(), &options).unwrap();
    let mut msg = MemoryMessage::new(&[("x-out", "old")], "");
    let w = apply(&t, &mut msg, BodyMode::HeadersOnly).unwrap();
    assert_eq!(msg.header("x-out"), None);
    assert_eq!(w[0].kind, WarningKind::Budget);
    // The default budget stops an effectively endless loop too.
    let (msg, w) = request(
        &set1("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"),
        &[],
        "",
    );
    assert_eq!(msg.header("x-out"), None);
    assert_eq!(w[0].kind, WarningKind::Budget);
}

#[test]
fn a_value_over_its_output_cap_fails_that_value_alone() {
    let options = Options {
        limits: Limits {
            max_header_value_bytes: 10,
            max_body_bytes: 20,
            ..Limits::default()
        },
        ..Options::default()
    };
    let cfg = r#"{"request":{"body":{"value":"{{ 'y' * 21 }}"},"set":[{"name":"a","value":"{{ 'x' * 11 }}"},{"name":"b","value":"{{ 'x' * 10 }}"},{"name":"c","value":"%REQ(long)%"}]}}"#;
    let t = Transformation::from_json_with(cfg.as_bytes(), &options).unwrap();
    let mut msg = MemoryMessage::new(&[("long", "0123456789abc"), ("content-type", "t")], "old");
    let w = apply(&t, &mut msg, BodyMode::Buffered).unwrap();
    assert_eq!(msg.header("a"), None);
    assert_eq!(msg.header("b").as_deref(), Some("xxxxxxxxxx"));
    assert_eq!(msg.header("c"), None);
    assert_eq!(
        msg.body_str(),
        "",
        "oversized body is a render error: empty body"
    );
    assert_eq!(msg.header("content-length").as_deref(), Some("0"));
    assert_eq!(
        w.iter().filter(|w| w.kind == WarningKind::Budget).count(),
        3
    );
    // The default caps are sane.
    assert_eq!(
        Limits::default().max_header_value_bytes,
        MAX_HEADER_VALUE_BYTES
    );
}

#[test]
fn a_panic_of_the_template_engine_fails_one_value() {
    // MiniJinja 2.12 panics when it orders a number beyond i64 against a float.
    let (msg, warnings) = request(
        r#"{"request":{"body":{"parseAs":"AsJson"},"set":[
            {"name":"a","value":"{{ big < 1.5 }}"},{"name":"b","value":"still here"}]}}"#,
        &[],
        r#"{"big": 12345678901234567890}"#,
    );
    assert_eq!(msg.header("a"), None);
    assert_eq!(msg.header("b").as_deref(), Some("still here"));
    assert_eq!(warnings.len(), 1);
    assert_eq!(warnings[0].kind, WarningKind::Render);
    assert!(warnings[0].message.contains("panicked"), "{warnings:?}");
}
