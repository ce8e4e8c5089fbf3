//! Behaviour tests: what a config loads to, and what it is refused for.

use super::*;

#[test]
fn config_errors_name_the_field() {
    let e = compile_err(
        r#"{"response":{"set":[{"name":"a","value":"ok"},{"name":"b","value":"{{ oops"}]}}"#,
    );
    assert_eq!(e.kind(), ErrorKind::Template);
    assert_eq!(e.location(), Some("response.set[1].value"));
    assert!(e.to_string().contains("response.set[1].value"), "{e}");

    let e = compile_err(r#"{"request":{"body":{"value":"%REQ(x"}}}"#);
    assert_eq!(e.kind(), ErrorKind::Operator);
    assert_eq!(e.location(), Some("request.body.value"));

    let e = compile_err(r#"{"request":{"set":[{"name":"a","value":"{{ 1 }}%BOGUS_OP%"}]}}"#);
    assert_eq!(e.kind(), ErrorKind::Operator);

    let e = compile_err(
        r#"{"request":{"dynamicMetadata":[{"namespace":"n","key":"k","value":{"stringValue":"{% if %}"}}]}}"#,
    );
    assert_eq!(
        e.location(),
        Some("request.dynamicMetadata[0].value.stringValue")
    );

    let e = compile_err(r#"{"request":{"set":[{"name":"a","value":"x\r\ny: z"}]}}"#);
    assert_eq!(e.kind(), ErrorKind::InvalidValue);

    let e = compile_err(r#"{"request":{"body":{"parseAs":"Yaml"}}}"#);
    assert_eq!(e.location(), Some("request.body.parseAs"));
}

#[test]
fn literal_values_are_not_rendered() {
    let t = compile(r#"{"request":{"set":[{"name":"a","value":"plain {not jinja} 100%%\n"}]}}"#);
    let mut msg = MemoryMessage::default();
    apply(&t, &mut msg, BodyMode::HeadersOnly).unwrap();
    assert_eq!(msg.header("a").as_deref(), Some("plain {not jinja} 100%"));
}

#[test]
fn trailing_newline_same_for_all_forms() {
    assert_eq!(render("{{ 'a' }}\n", &[], "").as_deref(), Some("a"));
    assert_eq!(
        render("%REQ(x)%\n", &[("x", "a")], "").as_deref(),
        Some("a")
    );
}

#[test]
fn smart_header_defaults_and_overrides() {
    let t = smart_header_transformation(b"{}", &Options::default()).unwrap();
    let req = MemoryMessage::new(&[(":method", "POST"), (":path", "/v1/chat")], "");
    let snap = t.capture_request_headers(&req);
    let mut resp = MemoryMessage::new(&[(":status", "200")], "");
    t.apply_response(
        &mut resp,
        &snap,
        BodyMode::HeadersOnly,
        &mut MemoryStreamInfo::default(),
    )
    .unwrap();
    assert_eq!(resp.header("x-custom-transformed").as_deref(), Some("true"));
    assert_eq!(
        resp.header("x-smart-header").as_deref(),
        Some("method=POST&path=/v1/chat")
    );
    assert!(!t.request().has_work() && !t.response().needs_body());

    let t = smart_header_transformation(
        br#"{"response_headers":[{"name":"X-Custom-Transformed","value":"yes"},{"name":"x-extra","value":"{{ request_header(':method') }}"},{"name":"x-smart-header"}],
             "request_headers":[{"name":"x-req","value":"r"}]}"#,
        &Options::default(),
    )
    .unwrap();
    let mut req = MemoryMessage::new(&[(":method", "GET")], "");
    let snap = t.capture_request_headers(&req);
    apply(&t, &mut req, BodyMode::HeadersOnly).unwrap();
    assert_eq!(req.header("x-req").as_deref(), Some("r"));
    let mut resp = MemoryMessage::new(&[("x-smart-header", "upstream")], "");
    t.apply_response(
        &mut resp,
        &snap,
        BodyMode::HeadersOnly,
        &mut MemoryStreamInfo::default(),
    )
    .unwrap();
    assert_eq!(resp.header("x-custom-transformed").as_deref(), Some("yes"));
    assert_eq!(resp.header("x-extra").as_deref(), Some("GET"));
    assert_eq!(resp.header("x-smart-header"), None, "empty value removes");

    assert!(smart_header_transformation(b"", &Options::default()).is_ok());
    assert!(
        smart_header_transformation(
            br#"{"response_headers":[{"name":"x","value":"%NOPE%"}]}"#,
            &Options::default()
        )
        .is_err()
    );
}

#[test]
fn transformation_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Transformation>();
    check::<HeaderSnapshot>();
}

/// Found by the `render` fuzz target: an unclosed `{%` tag ending in a multi-byte character
/// panicked while the template was split (byte slicing inside `н`).
#[test]
fn unclosed_tag_ending_in_multibyte_text_is_an_error_not_a_panic() {
    for value in ["!&{%\u{0}нw", "{%н", "{% raw %}н", "{% raw %}x{% endraw н"] {
        let config = serde_json::json!({"request": {"set": [{"name": "x", "value": value}]}});
        let _ = Transformation::from_json(config.to_string().as_bytes());
    }
    assert!(
        Transformation::from_json(
            "{\"request\":{\"set\":[{\"name\":\"x\",\"value\":\"{%н\"}]}}".as_bytes()
        )
        .is_err()
    );
}

/// A value shared by many configs is compiled once; a config that finds it compiled still reads
/// the headers it reads.
#[test]
fn a_value_compiled_for_another_config_still_reads_its_headers() {
    let value = "{{ header('x-shared-cache-probe') }}/{{ 'v' | upper }}";
    let first = compile(&set1(value));
    // A second config of other bytes with the same value at the same field.
    let second = compile(&format!(
        r#"{{"request":{{"set":[{{"name":"x-out","value":{}}}],"remove":["x-other"]}}}}"#,
        serde_json::to_string(value).unwrap()
    ));
    for t in [&first, &second] {
        let mut msg = MemoryMessage::new(&[("x-shared-cache-probe", "p")], "");
        apply(t, &mut msg, BodyMode::HeadersOnly).unwrap();
        assert_eq!(msg.header("x-out").as_deref(), Some("p/V"));
    }
}

/// Command operators inside a template are numbered per config: such a value is never taken
/// from another config, where its operators would have other numbers.
#[test]
fn a_template_with_operators_is_never_taken_from_another_config() {
    let shared = "{{ 'a' }}-%REQ(x-one)%";
    let first = compile(&format!(
        r#"{{"request":{{"set":[{{"name":"x-zero","value":"%REQ(x-zero)%{{{{ 'z' }}}}"}},{{"name":"x-out","value":{}}}]}}}}"#,
        serde_json::to_string(shared).unwrap()
    ));
    let second = compile(&format!(
        r#"{{"request":{{"set":[{{"name":"x-zero","value":"{{{{ 'q' }}}}"}},{{"name":"x-out","value":{}}}]}}}}"#,
        serde_json::to_string(shared).unwrap()
    ));
    for t in [&first, &second, &first] {
        let mut msg = MemoryMessage::new(&[("x-one", "ONE"), ("x-zero", "ZERO")], "");
        apply(t, &mut msg, BodyMode::HeadersOnly).unwrap();
        assert_eq!(msg.header("x-out").as_deref(), Some("a-ONE"));
    }
}

/// A literal `regex_extract` pattern is compiled with each config that holds it (a bad one is
/// refused at load in every config, not only the first).
#[test]
fn a_value_with_a_literal_pattern_is_checked_in_every_config() {
    let bad = set1("{{ regex_extract(header('x'), '(unclosed', 1) }}");
    for _ in 0..2 {
        assert!(compile_err(&bad).to_string().contains("regex_extract"));
    }
    let good = set1("{{ regex_extract(header('x'), 'a(b+)', 1) }}");
    for _ in 0..2 {
        let t = compile(&good);
        let mut msg = MemoryMessage::new(&[("x", "zabbz")], "");
        apply(&t, &mut msg, BodyMode::HeadersOnly).unwrap();
        assert_eq!(msg.header("x-out").as_deref(), Some("bb"));
    }
}
