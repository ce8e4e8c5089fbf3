//! Behaviour tests: `parseAs: AsJson`: JSON keys as variables, `context()`, undeclared names and the 400.

use super::*;

#[test]
fn as_json_variables_and_shadowing() {
    let cfg = r#"{"request":{"body":{"parseAs":"AsJson","value":"{{ model }}-{{ header }}-{{ nested.a }}-{{ missing }}"},
        "set":[{"name":"x-model","value":"{{ model }}"}]}}"#;
    let (msg, w) = request(
        cfg,
        &[("x", "y")],
        r#"{"model":"gpt","header":"shadowed","nested":{"a":1}}"#,
    );
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(msg.body_str(), "gpt-shadowed-1-");
    assert_eq!(msg.header("x-model").as_deref(), Some("gpt"));
}

#[test]
fn shadowed_function_cannot_be_called() {
    let cfg = r#"{"request":{"body":{"parseAs":"AsJson"},"set":[{"name":"x","value":"{{ header('x') }}"}]}}"#;
    let (msg, w) = request(cfg, &[("x", "1")], r#"{"header":"v"}"#);
    assert_eq!(msg.header("x"), None);
    assert_eq!(w[0].kind, WarningKind::Render);
}

#[test]
fn context_is_the_whole_json_value_arrays_too() {
    let cfg = r#"{"request":{"body":{"parseAs":"AsJson","value":"{{ context()[1].x }}|{{ context()|length }}"}}}"#;
    let (msg, _) = request(cfg, &[], r#"[{"x":1},{"x":2}]"#);
    assert_eq!(msg.body_str(), "2|2");
    let cfg = r#"{"request":{"body":{"parseAs":"AsJson","value":"{{ context().a }}"}}}"#;
    let (msg, _) = request(cfg, &[], r#"{"a":"b"}"#);
    assert_eq!(msg.body_str(), "b");
}

#[test]
fn context_and_body_empty_when_not_parsed() {
    let cfg = r#"{"request":{"body":{"value":"[{{ context() }}]"}}}"#;
    let (msg, _) = request(cfg, &[], r#"{"a":1}"#);
    assert_eq!(msg.body_str(), "[]");
}

#[test]
fn undeclared_variable_without_json_is_400() {
    let t = compile(r#"{"request":{"set":[{"name":"x","value":"{{ model }}"}]}}"#);
    let mut msg = MemoryMessage::new(&[("x", "keep")], "");
    let err = apply(&t, &mut msg, BodyMode::Buffered).unwrap_err();
    assert_eq!(err.status(), 400);
    assert_eq!(
        err.details(),
        "undeclared json variables in transformation template"
    );
    assert_eq!(
        err,
        ApplyError::UndeclaredJsonVariables {
            field: "request.set[0].value".into(),
            names: vec!["model".into()]
        }
    );
    assert_eq!(msg.header("x").as_deref(), Some("keep"), "nothing changed");
}

#[test]
fn undeclared_with_as_json_but_empty_body_is_400() {
    let t = compile(r#"{"response":{"body":{"parseAs":"AsJson","value":"{{ a }}"}}}"#);
    let mut msg = MemoryMessage::new(&[], "");
    let err = t
        .apply_response(
            &mut msg,
            &HeaderSnapshot::default(),
            BodyMode::Buffered,
            &mut MemoryStreamInfo::default(),
        )
        .unwrap_err();
    assert_eq!(err.details(), ApplyError::UNDECLARED_DETAILS);
    // JSON null is not a parsed object either.
    let mut msg = MemoryMessage::new(&[], "null");
    assert!(
        t.apply_response(
            &mut msg,
            &HeaderSnapshot::default(),
            BodyMode::Buffered,
            &mut MemoryStreamInfo::default()
        )
        .is_err()
    );
}

#[test]
fn functions_and_set_variables_are_not_undeclared() {
    let v = "{% set x = 'a' %}{% for i in range(2) %}{{ i }}{% endfor %}{{ x }}{{ env('NOPE') }}{{ base64_encode('a') }}{{ body() }}";
    assert_eq!(render(v, &[], "B").as_deref(), Some("01aYQ==B"));
}

#[test]
fn invalid_json_is_400() {
    let t = compile(r#"{"request":{"body":{"parseAs":"AsJson","value":"x"}}}"#);
    let mut msg = MemoryMessage::new(&[], "{not json");
    let err = apply(&t, &mut msg, BodyMode::Buffered).unwrap_err();
    assert_eq!(
        err.details(),
        "json parsing error in transformation template"
    );
    assert_eq!(msg.body_str(), "{not json", "nothing changed");
}

#[test]
fn deeply_nested_json_is_a_parse_error_not_a_crash() {
    let t = compile(r#"{"request":{"body":{"parseAs":"AsJson","value":"x"}}}"#);
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let mut msg = MemoryMessage::new(&[], &deep);
    let err = apply(&t, &mut msg, BodyMode::Buffered).unwrap_err();
    assert!(matches!(err, ApplyError::JsonParse { .. }));
    let ok = format!("{}{}", "[".repeat(100), "]".repeat(100));
    let mut msg = MemoryMessage::new(&[], &ok);
    apply(&t, &mut msg, BodyMode::Buffered).unwrap();
    assert_eq!(msg.body_str(), "x");
}

#[test]
fn as_json_alone_answers_a_body_that_is_not_json() {
    let t = compile(r#"{"response":{"body":{"parseAs":"AsJson"}}}"#);
    let snapshot = HeaderSnapshot::default();
    let mut info = MemoryStreamInfo::default();
    let mut msg = MemoryMessage::new(&[(":status", "200")], "{x");
    let err = t
        .apply_response(&mut msg, &snapshot, BodyMode::Buffered, &mut info)
        .unwrap_err();
    assert_eq!(
        err.details(),
        "json parsing error in transformation template"
    );
    let mut msg = MemoryMessage::new(&[(":status", "200")], r#"{"a": 1}"#);
    t.apply_response(&mut msg, &snapshot, BodyMode::Buffered, &mut info)
        .unwrap();
    assert_eq!(msg.body_str(), r#"{"a": 1}"#, "valid JSON passes untouched");
}

#[test]
fn unknown_function_loads_and_answers_like_a_missing_variable() {
    let policy = r#"{"request":{"add":[{"name":"a","value":"{{ no_such_fn('x') }}"}]}}"#;
    let t = compile(policy);
    let mut info = MemoryStreamInfo::default();
    let mut msg = MemoryMessage::new(&[], "");
    let err = t
        .apply_request(&mut msg, BodyMode::Buffered, &mut info)
        .unwrap_err();
    assert_eq!(err.status(), 400);
    assert_eq!(
        err.details(),
        "undeclared json variables in transformation template"
    );
    // With a parsed JSON body the call fails at render time: the header is skipped.
    let policy = r#"{"request":{"body":{"parseAs":"AsJson"},
        "set":[{"name":"a","value":"{{ no_such_fn('x') }}"},{"name":"b","value":"{{ k }}"}]}}"#;
    let (msg, warnings) = request(policy, &[], r#"{"k": "v"}"#);
    assert_eq!(msg.header("a"), None);
    assert_eq!(msg.header("b").as_deref(), Some("v"));
    assert_eq!(warnings.len(), 1, "{warnings:?}");
}

#[test]
fn a_missing_variable_stops_the_side_where_it_stands() {
    // Entries before the failing one have run (their dynamic metadata outlives the 400), as in
    // kgateway; nothing after it runs.
    let t = compile(
        r#"{"request":{"set":[{"name":"a","value":"1"}],"dynamicMetadata":[
            {"namespace":"ns","key":"k1","value":{"stringValue":"one"}},
            {"namespace":"ns","key":"k2","value":{"stringValue":"{{ nope }}"}},
            {"namespace":"ns","key":"k3","value":{"stringValue":"three"}}]}}"#,
    );
    let mut info = MemoryStreamInfo::default();
    let mut msg = MemoryMessage::new(&[], "");
    let err = t
        .apply_request(&mut msg, BodyMode::Buffered, &mut info)
        .unwrap_err();
    assert_eq!(err.status(), 400);
    assert_eq!(
        info.dynamic_metadata,
        vec![("ns".to_owned(), "k1".to_owned(), "one".to_owned())]
    );
}

#[test]
fn methods_and_macros_are_not_unknown_functions() {
    compile(&set1(
        "{% macro m(x) %}{{ x }}{% endmacro %}{{ m(1) }}{{ 'a,b'.split(',')|join('-') }}{{ 3 is divisibleby(3) }}{{ range(1)|list }}",
    ));
}
