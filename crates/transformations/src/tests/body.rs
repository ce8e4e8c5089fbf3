//! Behaviour tests: body replacement, `parseAs` and when a side buffers.

use super::*;

#[test]
fn body_replacement_and_content_length() {
    let (msg, _) = request(
        r#"{"request":{"body":{"value":"new {{ body() }}"}}}"#,
        &[("content-length", "3"), ("content-type", "text/plain")],
        "old",
    );
    assert_eq!(msg.body_str(), "new old");
    assert_eq!(msg.header("content-length").as_deref(), Some("7"));
    assert_eq!(msg.header("content-type").as_deref(), Some("text/plain"));

    let (msg, _) = request(
        r#"{"request":{"body":{"value":"{{ '' }}"}}}"#,
        &[("content-length", "3"), ("content-type", "text/plain")],
        "old",
    );
    assert_eq!(msg.body_str(), "");
    assert_eq!(msg.header("content-length").as_deref(), Some("0"));
    assert_eq!(msg.header("content-type"), None);
}

#[test]
fn body_created_when_there_was_none() {
    let (msg, _) = request(r#"{"request":{"body":{"value":"hello"}}}"#, &[], "");
    assert_eq!(msg.body_str(), "hello");
    assert_eq!(msg.header("content-length").as_deref(), Some("5"));
}

#[test]
fn body_render_error_empties_body() {
    let (msg, w) = request(
        r#"{"request":{"body":{"value":"{{ substring() }}"}}}"#,
        &[("content-type", "text/plain")],
        "old",
    );
    assert_eq!(msg.body_str(), "");
    assert_eq!(msg.header("content-length").as_deref(), Some("0"));
    assert_eq!(msg.header("content-type"), None);
    assert_eq!(w[0].field, "request.body.value");
}

#[test]
fn order_body_then_set_then_add_then_remove() {
    // set can override the content-length the body wrote; remove runs last.
    let (msg, _) = request(
        r#"{"request":{"body":{"value":"abc"},
            "set":[{"name":"x-cl","value":"{{ header('content-length') }}"}],
            "add":[{"name":"x-r","value":"added"}],"remove":["x-r"]}}"#,
        &[("content-length", "1")],
        "x",
    );
    assert_eq!(msg.header("content-length").as_deref(), Some("3"));
    assert_eq!(
        msg.header("x-cl").as_deref(),
        Some("1"),
        "templates read the headers of the side start"
    );
    assert_eq!(msg.header("x-r"), None);
}

#[test]
fn parse_as_none_and_headers_only() {
    let t = compile(
        r#"{"request":{"body":{"parseAs":"None","value":"{{ broken"},"set":[{"name":"x","value":"[{{ body() }}{{ context() }}]"}]}}"#,
    );
    assert!(!t.request().needs_body());
    assert!(t.request().has_work());
    let mut msg = MemoryMessage::new(&[], "body");
    apply(&t, &mut msg, BodyMode::Buffered).unwrap();
    assert_eq!(msg.body_str(), "body", "body template ignored");
    assert_eq!(msg.header("x").as_deref(), Some("[]"));

    // Headers-only mode (upgrade): same, for an AsString side with a body template.
    let t = compile(
        r#"{"request":{"body":{"value":"new"},"set":[{"name":"x","value":"[{{ body() }}]"}]}}"#,
    );
    let mut msg = MemoryMessage::new(&[], "body");
    apply(&t, &mut msg, BodyMode::HeadersOnly).unwrap();
    assert_eq!(msg.body_str(), "body");
    assert_eq!(msg.header("x").as_deref(), Some("[]"));
}

#[test]
fn needs_body_and_has_work() {
    let t = compile("{}");
    assert!(!t.request().has_work() && !t.response().has_work());
    assert!(!t.request().needs_body());
    let t = compile(r#"{"request":{"set":[{"name":"x","value":"1"}]}}"#);
    assert!(
        t.request().has_work() && !t.request().needs_body(),
        "nothing reads the body"
    );
    let t = compile(r#"{"request":{"set":[{"name":"x","value":"{{ body() }}"}]}}"#);
    assert!(t.request().needs_body());
    let t =
        compile(r#"{"request":{"body":{"parseAs":"AsJson"},"set":[{"name":"x","value":"1"}]}}"#);
    assert!(t.request().needs_body());
    let t = compile(r#"{"response":{"body":{"value":"x"}}}"#);
    assert!(t.response().needs_body() && !t.request().has_work());
    let t = compile(r#"{"request":{"body":{"parseAs":"AsJson"}}}"#);
    assert!(
        t.request().has_work() && t.request().needs_body(),
        "AsJson alone still parses the body (kgateway answers a non-JSON body with a 400)"
    );
    let t = compile(r#"{"request":{"body":{}}}"#);
    assert!(
        !t.request().has_work(),
        "AsString and no value: pass through"
    );
}
