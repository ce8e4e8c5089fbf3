//! Behaviour tests, one (or more) per rule of the kgateway contract.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use crate::memory::{MemoryMessage, MemoryStreamInfo};
use crate::*;

fn compile(json: &str) -> Transformation {
    Transformation::from_json(json.as_bytes()).unwrap_or_else(|e| panic!("{e}"))
}

fn compile_err(json: &str) -> Error {
    Transformation::from_json(json.as_bytes()).unwrap_err()
}

fn request(json: &str, headers: &[(&str, &str)], body: &str) -> (MemoryMessage, Vec<Warning>) {
    let t = compile(json);
    let mut msg = MemoryMessage::new(headers, body);
    let mut info = MemoryStreamInfo::default();
    let w = t
        .apply_request(&mut msg, BodyMode::Buffered, &mut info)
        .unwrap();
    (msg, w)
}

/// Applies the request side of `t` to `msg`, with an empty stream.
fn apply(
    t: &Transformation,
    msg: &mut MemoryMessage,
    mode: BodyMode,
) -> Result<Vec<Warning>, ApplyError> {
    t.apply_request(msg, mode, &mut MemoryStreamInfo::default())
}

fn set1(value: &str) -> String {
    format!(
        r#"{{"request":{{"set":[{{"name":"x-out","value":{}}}]}}}}"#,
        serde_json::to_string(value).unwrap()
    )
}

/// Renders `value` as a request `set` and returns the header (None if removed).
fn render(value: &str, headers: &[(&str, &str)], body: &str) -> Option<String> {
    let (msg, _) = request(&set1(value), headers, body);
    msg.header("x-out")
}

#[test]
fn set_add_remove_order_and_duplicates() {
    let (msg, w) = request(
        r#"{"request":{
            "set":[{"name":"X-A","value":"1"},{"name":"x-a","value":"2"},{"name":"x-b","value":"b"}],
            "add":[{"name":"x-a","value":"3"},{"name":"x-c","value":"c"}],
            "remove":["x-b","X-Gone"]}}"#,
        &[("x-a", "old"), ("x-a", "older"), ("x-gone", "g")],
        "",
    );
    assert!(w.is_empty());
    assert_eq!(
        msg.values("x-a"),
        vec!["2", "3"],
        "later set wins, then add appends"
    );
    assert_eq!(msg.header("x-b"), None);
    assert_eq!(msg.header("x-gone"), None);
    assert_eq!(msg.header("x-c").as_deref(), Some("c"));
}

#[test]
fn empty_values() {
    let (msg, _) = request(
        r#"{"request":{
            "set":[{"name":"x-set-empty"},{"name":"x-renders-empty","value":"{{ header('nope') }}"}],
            "add":[{"name":"x-add-empty","value":""},{"name":"x-add-renders-empty","value":"{{ '' }}"}]}}"#,
        &[
            ("x-set-empty", "1"),
            ("x-renders-empty", "2"),
            ("x-add-empty", "3"),
        ],
        "",
    );
    assert_eq!(
        msg.header("x-set-empty"),
        None,
        "empty configured value removes"
    );
    assert_eq!(msg.header("x-renders-empty"), None, "empty render removes");
    assert_eq!(msg.values("x-add-empty"), vec!["3"], "empty add skipped");
    assert_eq!(msg.header("x-add-renders-empty"), None);
}

#[test]
fn render_error_removes_header_and_warns() {
    let (msg, w) = request(
        r#"{"request":{"set":[{"name":"x-a","value":"{{ substring(1, 2) }}"}],
                       "add":[{"name":"x-b","value":"{{ substring(1, 2) }}"}]}}"#,
        &[("x-a", "old")],
        "",
    );
    assert_eq!(msg.header("x-a"), None);
    assert_eq!(msg.header("x-b"), None);
    assert_eq!(w.len(), 2);
    assert_eq!(w[0].kind, WarningKind::Render);
    assert_eq!(w[0].field, "request.set[0].value");
}

#[test]
fn header_lookups() {
    let h = &[("X-Foo", "a"), ("x-foo", "b"), (":method", "POST")];
    assert_eq!(
        render("{{ header('x-FOO') }}", h, "").as_deref(),
        Some("b"),
        "case-insensitive, last wins"
    );
    assert_eq!(
        render("{{ request_header(':method') }}", h, "").as_deref(),
        Some("POST")
    );
    assert_eq!(
        render("[{{ header('missing') }}]", h, "").as_deref(),
        Some("[]")
    );
    let name = "{% set n = 'x-' ~ 'foo' %}{{ header(n) }}";
    assert_eq!(
        render(name, h, "").as_deref(),
        Some("b"),
        "computed names read all headers"
    );
}

#[test]
fn header_reads_see_side_start_not_earlier_sets() {
    let (msg, _) = request(
        r#"{"request":{"set":[{"name":"x-a","value":"new"},{"name":"x-b","value":"{{ header('x-a') }}"}]}}"#,
        &[("x-a", "old")],
        "",
    );
    assert_eq!(msg.header("x-b").as_deref(), Some("old"));
}

#[test]
fn only_used_headers_are_snapshotted() {
    let t = compile(
        r#"{"response":{"set":[{"name":"a","value":"{{ request_header('X-One') }}%REQ(x-two?x-three)%"},
                                {"name":"b","value":"{{ header('x-resp') }}"}]}}"#,
    );
    let needs = t.response_request_headers();
    assert!(!needs.all());
    assert_eq!(
        needs.names().collect::<Vec<_>>(),
        vec!["x-one", "x-three", "x-two"]
    );
    let t = compile(r#"{"response":{"set":[{"name":"a","value":"{{ request_header(x) }}"}]}}"#);
    assert!(t.response_request_headers().all());
    let t = compile(r#"{"response":{"set":[{"name":"a","value":"literal"}]}}"#);
    assert!(t.response_request_headers().is_empty());
}

#[test]
fn response_phase_reads_request_snapshot_from_before_request_transformation() {
    let t = compile(
        r#"{"request":{"set":[{"name":"x-user","value":"changed"}]},
            "response":{"set":[{"name":"x-was","value":"{{ request_header('x-user') }}|{{ header('x-user') }}"},
                               {"name":"x-path","value":"%REQ(:path)% %RESP(:status)%"}]}}"#,
    );
    let mut req = MemoryMessage::new(&[("x-user", "original"), (":path", "/p")], "");
    let snapshot = t.capture_request_headers(&req);
    let mut info = MemoryStreamInfo::default();
    t.apply_request(&mut req, BodyMode::HeadersOnly, &mut info)
        .unwrap();
    assert_eq!(req.header("x-user").as_deref(), Some("changed"));
    let mut resp = MemoryMessage::new(&[(":status", "200"), ("x-user", "resp")], "");
    t.apply_response(&mut resp, &snapshot, BodyMode::HeadersOnly, &mut info)
        .unwrap();
    assert_eq!(resp.header("x-was").as_deref(), Some("original|resp"));
    assert_eq!(resp.header("x-path").as_deref(), Some("/p 200"));
}

#[test]
fn resp_operator_is_empty_in_request_phase() {
    assert_eq!(
        render("[%RESP(:status)%]", &[(":status", "x")], "").as_deref(),
        Some("[]")
    );
}

#[test]
fn pseudo_headers() {
    let t = compile(
        r#"{"response":{"set":[{"name":":status","value":"418"}]},"request":{"set":[{"name":":path","value":"/new"},{"name":":method","value":"PUT"}]}}"#,
    );
    let mut info = MemoryStreamInfo::default();
    let mut req = MemoryMessage::new(&[(":path", "/old"), (":method", "GET")], "");
    t.apply_request(&mut req, BodyMode::HeadersOnly, &mut info)
        .unwrap();
    assert_eq!(req.header(":path").as_deref(), Some("/new"));
    assert_eq!(req.header(":method").as_deref(), Some("PUT"));
    let mut resp = MemoryMessage::new(&[(":status", "200")], "");
    t.apply_response(
        &mut resp,
        &HeaderSnapshot::default(),
        BodyMode::HeadersOnly,
        &mut info,
    )
    .unwrap();
    assert_eq!(resp.header(":status").as_deref(), Some("418"));
}

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

/// A map where adding an absent header is cheaper than setting it (as Envoy's), recording
/// how it was read and which of set and add each header write used.
struct AddsCheaply {
    inner: MemoryMessage,
    calls: std::cell::RefCell<Vec<String>>,
}

impl AddsCheaply {
    fn new(headers: &[(&str, &str)], body: &str) -> AddsCheaply {
        AddsCheaply {
            inner: MemoryMessage::new(headers, body),
            calls: Default::default(),
        }
    }
    fn calls(&self) -> Vec<String> {
        self.calls.borrow().clone()
    }
}

impl HeaderMap for AddsCheaply {
    fn get(&self, name: &str) -> Option<std::borrow::Cow<'_, [u8]>> {
        self.inner.get(name)
    }
    fn for_each(&self, f: &mut dyn FnMut(&[u8], &[u8])) {
        self.calls.borrow_mut().push("read all".to_owned());
        self.inner.for_each(f)
    }
    fn set(&mut self, name: &str, value: &[u8]) {
        self.calls.borrow_mut().push(format!("set {name}"));
        self.inner.set(name, value)
    }
    fn add(&mut self, name: &str, value: &[u8]) {
        self.calls.borrow_mut().push(format!("add {name}"));
        self.inner.add(name, value)
    }
    fn remove(&mut self, name: &str) {
        self.inner.remove(name)
    }
    fn adds_absent_cheaper(&self) -> bool {
        true
    }
}

impl Message for AddsCheaply {
    fn body(&self) -> std::borrow::Cow<'_, [u8]> {
        self.inner.body()
    }
    fn set_body(&mut self, body: &[u8]) {
        self.inner.set_body(body)
    }
}

#[test]
fn a_set_of_an_absent_header_is_an_add_with_the_same_result() {
    let policy = r#"{"request":{"body":{"value":"abc"},"set":[
        {"name":"x-new","value":"1"},{"name":"x-old","value":"2"},{"name":"X-New","value":"3"},
        {"name":"content-type","value":"text/x"},{"name":"x-gone","value":""}]}}"#;
    let t = compile(policy);
    let headers = [("x-old", "0"), ("x-keep", "k")];
    let mut cheap = AddsCheaply::new(&headers, "body");
    t.apply_request(
        &mut cheap,
        BodyMode::Buffered,
        &mut MemoryStreamInfo::default(),
    )
    .unwrap();
    assert_eq!(
        cheap.calls(),
        [
            "set content-length", // the body step
            "read all",           // once, for x-new, x-old and x-gone
            "add x-new",          // absent
            "set x-old",          // present
            "set x-new",          // added just before
            "set content-type",   // written by the body step (absent here, but not assumed)
        ]
    );
    let (plain, _) = request(policy, &headers, "body");
    assert_eq!(cheap.inner, plain, "the same message as with set alone");
    assert_eq!(plain.values("x-new"), ["3"]);
}

#[test]
fn a_set_name_of_64_bytes_or_more_is_never_added() {
    let long = "x".repeat(64);
    let policy = format!(
        r#"{{"request":{{"set":[{{"name":"{long}","value":"1"}},{{"name":"x-short","value":"2"}}]}}}}"#
    );
    let mut cheap = AddsCheaply::new(&[("x-other", "o")], "");
    compile(&policy)
        .apply_request(
            &mut cheap,
            BodyMode::HeadersOnly,
            &mut MemoryStreamInfo::default(),
        )
        .unwrap();
    assert_eq!(
        cheap.calls(),
        [
            "read all".to_owned(),
            format!("set {long}"),
            "add x-short".to_owned()
        ]
    );
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
fn upgrade_detection() {
    assert!(is_upgrade_or_connect(&MemoryMessage::new(
        &[("Upgrade", "WebSocket")],
        ""
    )));
    assert!(is_upgrade_or_connect(&MemoryMessage::new(
        &[(":method", "CONNECT")],
        ""
    )));
    assert!(!is_upgrade_or_connect(&MemoryMessage::new(
        &[(":method", "GET"), ("upgrade", "h2c")],
        ""
    )));
}

#[test]
fn dynamic_metadata() {
    let t = compile(
        r#"{"request":{"dynamicMetadata":[
            {"namespace":"ns","key":"k","value":{"stringValue":"{{ header('x') }}"}},
            {"namespace":"ns","key":"empty","value":{"stringValue":"{{ header('nope') }}"}},
            {"namespace":"","key":"k","value":{"stringValue":"v"}}]}}"#,
    );
    assert_eq!(
        t.warnings(),
        ["request.dynamicMetadata[2] ignored: empty namespace"]
    );
    let mut info = MemoryStreamInfo::default();
    let mut msg = MemoryMessage::new(&[("x", "v")], "");
    t.apply_request(&mut msg, BodyMode::HeadersOnly, &mut info)
        .unwrap();
    assert_eq!(
        info.dynamic_metadata,
        vec![("ns".into(), "k".into(), "v".into())]
    );
}

#[test]
fn template_functions_in_context() {
    let h = &[("x-b64", "aGVsbG8="), ("x-s", "hello world")];
    assert_eq!(
        render("{{ base64_decode(header('x-b64')) }}", h, "").as_deref(),
        Some("hello")
    );
    assert_eq!(
        render("{{ substring(header('x-s'), 6) }}", h, "").as_deref(),
        Some("world")
    );
    assert_eq!(
        render("{{ substring(header('x-s'), 0, 5) }}", h, "").as_deref(),
        Some("hello")
    );
    assert_eq!(
        render("{{ replace_with_string(header('x-s'), 'o', '0') }}", h, "").as_deref(),
        Some("hell0 w0rld")
    );
    assert_eq!(
        render("{{ raw_string('a\"b') }}", h, "").as_deref(),
        Some("a\\\"b")
    );
    assert_eq!(
        render("{{ base64url_encode('?>') }}", h, "").as_deref(),
        Some("Pz4=")
    );
    assert_eq!(
        render("{{ 'x'|upper }}", h, "").as_deref(),
        Some("X"),
        "builtins work"
    );
}

#[test]
fn env_function() {
    let mut vars = HashMap::new();
    vars.insert("POD_NAME".to_owned(), "pod-1".to_owned());
    let options = Options {
        env: Arc::new(move |n| vars.get(n).cloned()),
        ..Options::default()
    };
    let t = Transformation::from_json_with(
        set1("{{ env('POD_NAME') }}|{{ env('UNSET') }}").as_bytes(),
        &options,
    )
    .unwrap();
    let mut msg = MemoryMessage::default();
    apply(&t, &mut msg, BodyMode::HeadersOnly).unwrap();
    assert_eq!(msg.header("x-out").as_deref(), Some("pod-1|"));
    // The default reads the process environment; an unset variable renders empty.
    assert_eq!(
        render("[{{ env('TRANSFORMATIONS_SURELY_UNSET_VAR') }}]", &[], "").as_deref(),
        Some("[]")
    );
}

/// Configs share one template environment and, for the same template, one compiled template;
/// each still renders with its own options and patterns, and dropping one leaves the others whole.
#[test]
fn shared_templates_keep_each_config_its_own_state() {
    let config = |pod: &'static str| {
        let options = Options {
            env: Arc::new(move |n| (n == "POD").then(|| pod.to_owned())),
            ..Options::default()
        };
        Transformation::from_json_with(
            set1("{{ env('POD') }}/{{ regex_extract(request_header('x-id'), '^(a+)', 1) }}")
                .as_bytes(),
            &options,
        )
        .unwrap()
    };
    let out = |t: &Transformation| {
        let mut msg = MemoryMessage::new(&[("x-id", "aab")], "");
        apply(t, &mut msg, BodyMode::HeadersOnly).unwrap();
        msg.header("x-out")
    };
    let (one, two) = (config("pod-1"), config("pod-2"));
    assert_eq!(out(&one).as_deref(), Some("pod-1/aa"));
    assert_eq!(out(&two).as_deref(), Some("pod-2/aa"));
    drop(one);
    assert_eq!(out(&two).as_deref(), Some("pod-2/aa"));
    let three = config("pod-3");
    drop(two);
    assert_eq!(out(&three).as_deref(), Some("pod-3/aa"));
}

#[test]
fn replace_with_random_differs_across_renders() {
    let t = compile(&set1("{{ replace_with_random('id-X', 'X') }}"));
    let mut seen = std::collections::HashSet::new();
    for _ in 0..5 {
        let mut msg = MemoryMessage::default();
        apply(&t, &mut msg, BodyMode::HeadersOnly).unwrap();
        let v = msg.header("x-out").unwrap();
        assert_eq!(v.len(), 3 + 22);
        seen.insert(v);
    }
    assert_eq!(seen.len(), 5);
}

#[test]
fn operators_in_values() {
    let t = compile(
        r#"{"request":{"set":[
            {"name":"x-plain","value":"m=%REQ(:METHOD)%&p=%REQ(:path):3%&a=%REQ(x-none?X-Alt)%&pct=100%%"},
            {"name":"x-jinja","value":"{{ header(':method')|lower }} %PROTOCOL% %START_TIME% {{ '%REQ(:path)%' }}"},
            {"name":"x-addr","value":"%DOWNSTREAM_REMOTE_ADDRESS%/%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"}]}}"#,
    );
    let mut info = MemoryStreamInfo {
        protocol: Some("HTTP/2".into()),
        start_time: Some(UNIX_EPOCH + Duration::from_millis(1_795_700_786_123)),
        downstream_remote_address: Some("10.0.0.1:5555".parse().unwrap()),
        ..MemoryStreamInfo::default()
    };
    let mut msg = MemoryMessage::new(
        &[(":method", "GET"), (":path", "/abcdef"), ("x-alt", "alt")],
        "",
    );
    t.apply_request(&mut msg, BodyMode::HeadersOnly, &mut info)
        .unwrap();
    assert_eq!(
        msg.header("x-plain").as_deref(),
        Some("m=GET&p=/ab&a=alt&pct=100%")
    );
    assert_eq!(
        msg.header("x-jinja").as_deref(),
        Some("get HTTP/2 2026-11-26T13:46:26.123Z %REQ(:path)%"),
        "operators resolve in text, not inside Jinja expressions"
    );
    assert_eq!(
        msg.header("x-addr").as_deref(),
        Some("10.0.0.1:5555/10.0.0.1")
    );
}

#[test]
fn missing_stream_info_renders_empty() {
    assert_eq!(
        render(
            "[%PROTOCOL%][%START_TIME%][%DOWNSTREAM_REMOTE_ADDRESS%]",
            &[],
            ""
        )
        .as_deref(),
        Some("[][][]")
    );
}

#[test]
fn literal_percent_text_is_kept() {
    assert_eq!(
        render("50% of a%2Fb", &[], "").as_deref(),
        Some("50% of a%2Fb")
    );
    assert_eq!(render("{{ 1 }}% done", &[], "").as_deref(), Some("1% done"));
}

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
fn methods_and_macros_are_not_unknown_functions() {
    compile(&set1(
        "{% macro m(x) %}{{ x }}{% endmacro %}{{ m(1) }}{{ 'a,b'.split(',')|join('-') }}{{ 3 is divisibleby(3) }}{{ range(1)|list }}",
    ));
}

#[test]
fn rendered_crlf_nul_never_emitted() {
    let (msg, w) = request(
        r#"{"request":{"set":[{"name":"x-a","value":"{{ header('x-in') }}"}],"add":[{"name":"x-b","value":"{{ base64_decode('YQpi') }}"},{"name":"x-c","value":"a{{ '\u0000' }}"}]}}"#,
        &[("x-a", "old"), ("x-in", "ok")],
        "",
    );
    assert_eq!(msg.header("x-a").as_deref(), Some("ok"));
    assert_eq!(msg.header("x-b"), None, "decoded LF dropped");
    assert_eq!(msg.header("x-c"), None, "NUL dropped");
    assert_eq!(w.len(), 2);
    assert!(w.iter().all(|w| w.kind == WarningKind::InvalidHeaderValue));

    let (msg, w) = request(&set1("{{ 'a\\r\\nInjected: 1' }}"), &[("x-out", "old")], "");
    assert_eq!(msg.header("x-out"), None, "set removes");
    assert_eq!(w[0].kind, WarningKind::InvalidHeaderValue);
}

#[test]
fn cr_lf_and_nul_make_a_value_invalid_at_any_length_and_place() {
    use crate::apply::is_invalid_header_value;
    for len in [1, 2, 31, 32, 33, 63, 64, 65, 200] {
        assert!(!is_invalid_header_value(&vec![b'a'; len]), "{len}");
        for bad in [b'\r', b'\n', 0] {
            for at in [0, len / 2, len - 1] {
                let mut v = vec![b'a'; len];
                v[at] = bad;
                assert!(is_invalid_header_value(&v), "{len} {at} {bad}");
            }
        }
    }
    assert!(!is_invalid_header_value(b""));
    assert!(!is_invalid_header_value("tab\tand é".as_bytes()));
}

#[test]
fn non_utf8_headers_and_bodies_do_not_panic() {
    let t = compile(
        r#"{"request":{"body":{"value":"{{ body() }}"},"set":[{"name":"x","value":"{{ header('x-bin') }}"}]}}"#,
    );
    let mut msg = MemoryMessage {
        headers: vec![("x-bin".into(), vec![0xff, b'a'])],
        body: vec![0xfe, b'b'],
    };
    apply(&t, &mut msg, BodyMode::Buffered).unwrap();
    assert_eq!(msg.header("x").as_deref(), Some("\u{FFFD}a"));
    assert_eq!(msg.body_str(), "\u{FFFD}b");
}

#[test]
fn render_budget_fuel() {
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
fn render_budget_output_size() {
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

/// Found by the `operators` fuzz target: a `:N` truncation of usize::MAX overflowed when added
/// to the output position (a panic in debug builds, a wrong cut of earlier text in release).
#[test]
fn truncation_length_at_usize_max_keeps_the_whole_value() {
    let config = format!(
        r#"{{"request":{{"set":[{{"name":"x-a","value":"p%REQ(x-b):{}%"}}]}}}}"#,
        usize::MAX
    );
    let t = Transformation::from_json(config.as_bytes()).unwrap();
    let mut request = MemoryMessage::new(&[("x-b", "value")], "");
    apply(&t, &mut request, BodyMode::HeadersOnly).unwrap();
    assert_eq!(request.header("x-a").as_deref(), Some("pvalue"));
}

#[test]
fn the_last_metadata_entry_for_a_key_decides_even_when_empty() {
    // The replaced entries never run: not even their missing variable answers a 400.
    let t = compile(
        r#"{"request":{"dynamicMetadata":[
            {"namespace":"ns","key":"a","value":{"stringValue":"{{ never_read }}"}},
            {"namespace":"ns","key":"b","value":{"stringValue":"kept"}},
            {"namespace":"ns","key":"a","value":{"stringValue":"{{ 'x'|no_such_filter }}"}},
            {"namespace":"other","key":"a","value":{"stringValue":"1"}},
            {"namespace":"ns","key":"c","value":{"stringValue":"c1"}},
            {"namespace":"ns","key":"c","value":{"stringValue":"c2"}}]}}"#,
    );
    let mut info = MemoryStreamInfo::default();
    let mut msg = MemoryMessage::new(&[], "");
    t.apply_request(&mut msg, BodyMode::Buffered, &mut info)
        .unwrap();
    let set: Vec<_> = info
        .dynamic_metadata
        .iter()
        .map(|(ns, k, v)| format!("{ns}/{k}={v}"))
        .collect();
    assert_eq!(set, ["ns/b=kept", "other/a=1", "ns/c=c2"]);
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

#[test]
fn an_invalid_header_name_loads_but_is_never_sent() {
    let t = compile(
        r#"{"request":{"set":[{"name":"bad name","value":"x"},{"name":"X-Good","value":"1"}],
            "add":[{"name":"","value":"y"},{"name":"x:y","value":"z"},{"name":":path","value":"/p"}],
            "remove":["", "a b"]}}"#,
    );
    assert_eq!(
        t.warnings(),
        [
            r#"request.set[0] ignored: "bad name" is not a valid header name"#,
            r#"request.add[0] ignored: "" is not a valid header name"#,
            r#"request.add[1] ignored: "x:y" is not a valid header name"#,
        ]
    );
    let mut info = MemoryStreamInfo::default();
    let mut msg = MemoryMessage::new(&[(":path", "/")], "");
    t.apply_request(&mut msg, BodyMode::Buffered, &mut info)
        .unwrap();
    assert_eq!(msg.header("x-good").as_deref(), Some("1"));
    assert_eq!(msg.values(":path"), ["/", "/p"]);
    assert_eq!(msg.values("bad name"), Vec::<String>::new());
}

// --- Functions beyond kgateway (regex_extract, query params, JSON edits, metadata) -----------

#[test]
fn regex_extract_in_values() {
    let h = [
        ("x-user", "id=4711; role=admin"),
        ("x-pat", "role=([a-z]+)"),
    ];
    assert_eq!(
        render(
            r#"{{ regex_extract(header("x-user"), "id=([0-9]+)", 1) }}"#,
            &h,
            ""
        )
        .as_deref(),
        Some("4711")
    );
    assert_eq!(
        render(
            r#"{{ regex_extract(header("x-user"), "id=(?P<n>[0-9]+)", group="n") }}"#,
            &h,
            ""
        )
        .as_deref(),
        Some("4711")
    );
    assert_eq!(
        render(
            r#"{{ regex_extract(header("x-user"), "[a-z]+=[a-z]+") }}"#,
            &h,
            ""
        )
        .as_deref(),
        Some("role=admin"),
        "group 0 by default"
    );
    assert_eq!(
        render(r#"{{ regex_extract(header("x-user"), "\\d+") }}"#, &h, "").as_deref(),
        Some("4711"),
        "an escaped literal pattern"
    );
    // No match, an absent group, a negative group: empty (the header is removed).
    for v in [
        r#"{{ regex_extract(header("x-user"), "nomatch") }}"#,
        r#"{{ regex_extract(header("x-user"), "(id)", 5) }}"#,
        r#"{{ regex_extract(header("x-user"), "(id)", -1) }}"#,
        r#"{{ regex_extract(header("x-user"), "(id)", group="nope") }}"#,
        r#"{{ regex_extract(header("x-none"), "(.*)x") }}"#,
    ] {
        assert_eq!(render(v, &h, ""), None, "{v}");
    }
    // A computed pattern: compiled on first use, an invalid one renders empty.
    assert_eq!(
        render(
            r#"{{ regex_extract(header("x-user"), header("x-pat"), 1) }}"#,
            &h,
            ""
        )
        .as_deref(),
        Some("admin")
    );
    assert_eq!(
        render(
            r#"{{ regex_extract(header("x-user"), header("x-pat") ~ "(") }}"#,
            &h,
            ""
        ),
        None
    );
    // A non-string value is read as text.
    let t = compile(
        r#"{"request":{"body":{"parseAs":"AsJson","value":"{{ regex_extract(n, \"^[0-9]\") }}"}}}"#,
    );
    let mut msg = MemoryMessage::new(&[], r#"{"n": 42}"#);
    apply(&t, &mut msg, BodyMode::Buffered).unwrap();
    assert_eq!(msg.body_str(), "4");
}

#[test]
fn regex_extract_literal_pattern_is_checked_at_load_time() {
    let e = compile_err(&set1(r#"{{ regex_extract(header("a"), "(unclosed") }}"#));
    assert_eq!(e.location(), Some("request.set[0].value"));
    assert!(
        e.message().contains("regex_extract: invalid pattern"),
        "{e}"
    );
    let e = compile_err(&set1(
        r#"{{ regex_extract(header("a"), "x{1000}{1000}") }}"#,
    ));
    assert!(e.message().contains("size limit"), "{e}");
    // Extra keyword arguments fail the render (header removed), never the process.
    assert_eq!(
        render(r#"{{ regex_extract("a", "a", bogus=1) }}"#, &[], ""),
        None
    );
}

#[test]
fn query_param_functions() {
    let h = [(
        ":path",
        "/v1/items?page=2&q=caf%C3%A9+au+lait&debug=1&page=9",
    )];
    assert_eq!(
        render(r#"{{ query_param("page") }}"#, &h, "").as_deref(),
        Some("2")
    );
    assert_eq!(
        render(r#"{{ query_param("q") }}"#, &h, "").as_deref(),
        Some("café au lait")
    );
    assert_eq!(render(r#"{{ query_param("absent") }}"#, &h, ""), None);
    assert_eq!(
        render(r#"{{ query_param("page") }}"#, &[], ""),
        None,
        "no :path"
    );

    // The recipes: add api-version, drop debug, both on :path.
    let (msg, w) = request(
        r#"{"request":{"set":[{"name":":path","value":"{{ set_query_param(header(\":path\"), \"api-version\", \"2024-06-01\") }}"}]}}"#,
        &h,
        "",
    );
    assert!(w.is_empty());
    assert_eq!(
        msg.header(":path").as_deref(),
        Some("/v1/items?page=2&q=caf%C3%A9+au+lait&debug=1&page=9&api-version=2024-06-01")
    );
    let (msg, _) = request(
        r#"{"request":{"set":[{"name":":path","value":"{{ remove_query_param(header(\":path\"), \"debug\") }}"}]}}"#,
        &h,
        "",
    );
    assert_eq!(
        msg.header(":path").as_deref(),
        Some("/v1/items?page=2&q=caf%C3%A9+au+lait&page=9")
    );
}

#[test]
fn query_param_reads_the_request_path_in_the_response_phase_too() {
    let t =
        compile(r#"{"response":{"set":[{"name":"x-page","value":"{{ query_param('page') }}"}]}}"#);
    assert!(
        t.response_request_headers().names().any(|n| n == ":path"),
        "the snapshot for the response keeps :path"
    );
    let request = MemoryMessage::new(&[(":path", "/a?page=7"), ("x-other", "1")], "");
    let snapshot = t.capture_request_headers(&request);
    assert_eq!(snapshot.len(), 1, "only :path is copied");
    let mut response = MemoryMessage::new(&[(":status", "200"), (":path", "/resp?page=1")], "");
    t.apply_response(
        &mut response,
        &snapshot,
        BodyMode::HeadersOnly,
        &mut MemoryStreamInfo::default(),
    )
    .unwrap();
    assert_eq!(response.header("x-page").as_deref(), Some("7"));
}

#[test]
fn json_set_in_a_body_keeps_everything_else() {
    let body = "{\"model\": \"gpt-4\",\n \"max_tokens\": 1.0e3, \"msg\": \"\\u00e9\"}";
    let config = |value: &str| {
        format!(
            r#"{{"request":{{"body":{{"value":{}}}}}}}"#,
            serde_json::to_string(value).unwrap()
        )
    };
    let (msg, w) = request(
        &config(r#"{{ json_set(body(), "/model", "gpt-4o-mini") }}"#),
        &[("content-type", "application/json")],
        body,
    );
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(msg.body_str(), body.replace("gpt-4\"", "gpt-4o-mini\""));
    assert_eq!(
        msg.header("content-length"),
        Some(msg.body.len().to_string())
    );
    let (msg, _) = request(
        &config(r#"{{ json_set(body(), "/max_tokens", "256", raw=true) }}"#),
        &[],
        body,
    );
    assert_eq!(msg.body_str(), body.replace("1.0e3", "256"));
    let (msg, _) = request(
        &config(r#"{{ json_set(body(), "/max_tokens", "256") }}"#),
        &[],
        body,
    );
    assert_eq!(
        msg.body_str(),
        body.replace("1.0e3", "\"256\""),
        "a string by default"
    );
    let (msg, _) = request(&config(r#"{{ json_delete(body(), "/msg") }}"#), &[], body);
    assert_eq!(
        msg.body_str(),
        "{\"model\": \"gpt-4\",\n \"max_tokens\": 1.0e3}"
    );
    // A header value can be quoted into a document: escaped as a JSON string.
    let (msg, _) = request(
        &config(r#"{{ json_set(body(), "/user", header("x-user")) }}"#),
        &[("x-user", "a\"b")],
        "{}",
    );
    assert_eq!(msg.body_str(), r#"{"user":"a\"b"}"#);
    // Bad input: empty (a body that fails like this is emptied, as a failed body render).
    for (value, body) in [
        (r#"{{ json_set(body(), "/model", "x") }}"#, "not json"),
        (r#"{{ json_set(body(), "model", "x") }}"#, "{}"),
        (r#"{{ json_set(body(), "/model", "{", raw=true) }}"#, "{}"),
        (r#"{{ json_delete(body(), "/a~") }}"#, "{}"),
    ] {
        let (msg, _) = request(
            &config(value),
            &[("content-type", "application/json")],
            body,
        );
        assert_eq!(msg.body_str(), "", "{value} on {body}");
        assert_eq!(msg.header("content-type"), None);
    }
}

#[test]
fn metadata_reads_only_the_named_pairs_once_per_side() {
    let t = compile(
        r#"{"request":{"set":[
            {"name":"x-tenant","value":"{{ metadata('envoy.lb', 'tenant') }}"},
            {"name":"x-again","value":"{{ metadata('envoy.lb', 'tenant') }}-{{ metadata('envoy.lb', 'tenant', source='dynamic') }}"},
            {"name":"x-route","value":"{{ metadata('team', 'owner', 'route') }}"},
            {"name":"x-absent","value":"{{ metadata('envoy.lb', 'nope') }}"}]},
          "response":{"set":[{"name":"x-tenant","value":"{{ metadata('envoy.lb', 'tenant') }}"}]}}"#,
    );
    let mut info = MemoryStreamInfo::default()
        .with_metadata(MetadataSource::Dynamic, "envoy.lb", "tenant", "acme")
        .with_metadata(MetadataSource::Route, "team", "owner", "payments")
        .with_metadata(MetadataSource::Dynamic, "other", "unread", "x");
    let mut msg = MemoryMessage::new(&[], "");
    t.apply_request(&mut msg, BodyMode::HeadersOnly, &mut info)
        .unwrap();
    assert_eq!(msg.header("x-tenant").as_deref(), Some("acme"));
    assert_eq!(msg.header("x-again").as_deref(), Some("acme-acme"));
    assert_eq!(msg.header("x-route").as_deref(), Some("payments"));
    assert_eq!(msg.header("x-absent"), None, "absent renders empty");
    assert_eq!(
        info.metadata_reads.get(),
        3,
        "three distinct pairs, each read once"
    );
    let snapshot = t.capture_request_headers(&msg);
    let mut response = MemoryMessage::new(&[(":status", "200")], "");
    t.apply_response(&mut response, &snapshot, BodyMode::HeadersOnly, &mut info)
        .unwrap();
    assert_eq!(response.header("x-tenant").as_deref(), Some("acme"));
    assert_eq!(
        info.metadata_reads.get(),
        4,
        "the response side reads its one pair"
    );
}

#[test]
fn metadata_arguments_must_be_literals() {
    for (value, want) in [
        ("{{ metadata(header('a'), 'k') }}", "string literals"),
        ("{{ metadata('ns') }}", "string literals"),
        (
            "{{ metadata('ns', 'k', source='filter') }}",
            "unknown source",
        ),
        ("{{ metadata('ns', 'k', 'route', 'x') }}", "string literals"),
        ("{{ metadata('ns', 'k', other='x') }}", "unknown argument"),
    ] {
        let e = compile_err(&set1(value));
        assert_eq!(e.location(), Some("request.set[0].value"), "{value}");
        assert!(e.message().contains(want), "{value}: {e}");
    }
}

#[test]
fn new_functions_are_never_undeclared_and_header_lowering_still_works() {
    let t = compile(&set1(
        "{{ regex_extract('a', 'a') }}{{ query_param('x') }}{{ set_query_param('/', 'a', 'b') }}\
         {{ remove_query_param('/', 'a') }}{{ json_set('{}', '/a', 'b') }}{{ json_delete('{}', '/a') }}\
         {{ metadata('n', 'k') }}",
    ));
    let mut msg = MemoryMessage::new(&[], "");
    let w = apply(&t, &mut msg, BodyMode::HeadersOnly)
        .expect("no 400: every new function is a registered global");
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(
        msg.header("x-out").as_deref(),
        Some(r#"a/?a=b/{"a":"b"}{}"#)
    );
    // A value of text and header() calls still compiles to operators (no template).
    let (msg, _) = request(&set1("p={{ header(':path') }}"), &[(":path", "/a")], "");
    assert_eq!(msg.header("x-out").as_deref(), Some("p=/a"));
}

#[test]
fn my_smart_header_values_have_the_new_functions() {
    let t = smart_header_transformation(
        br#"{"request_headers":[{"name":"x-page","value":"{{ query_param('page') }}"}],
             "response_headers":[{"name":"x-id","value":"{{ regex_extract(request_header('x-user'), '[0-9]+') }}"}]}"#,
        &Options::default(),
    )
    .unwrap();
    let mut request = MemoryMessage::new(
        &[(":method", "GET"), (":path", "/?page=3"), ("x-user", "u77")],
        "",
    );
    let snapshot = t.capture_request_headers(&request);
    let mut info = MemoryStreamInfo::default();
    t.apply_request(&mut request, BodyMode::HeadersOnly, &mut info)
        .unwrap();
    assert_eq!(request.header("x-page").as_deref(), Some("3"));
    let mut response = MemoryMessage::new(&[(":status", "200")], "");
    t.apply_response(&mut response, &snapshot, BodyMode::HeadersOnly, &mut info)
        .unwrap();
    assert_eq!(response.header("x-id").as_deref(), Some("77"));
}

#[test]
fn always_sets_only_a_last_literal_set_that_nothing_undoes() {
    let side = |json: &str| compile(json);
    let t =
        side(r#"{"response":{"set":[{"name":"X-M","value":"true"},{"name":"x-o","value":"1"}]}}"#);
    assert!(t.response().always_sets("x-m", "true"));
    assert!(!t.response().always_sets("x-m", "false"));
    assert!(!t.request().always_sets("x-m", "true"));
    for undone in [
        r#"{"response":{"set":[{"name":"x-m","value":"true"},{"name":"x-m","value":"no"}]}}"#,
        r#"{"response":{"set":[{"name":"x-m","value":"true"}],"add":[{"name":"x-m","value":"2"}]}}"#,
        r#"{"response":{"set":[{"name":"x-m","value":"true"}],"remove":["X-M"]}}"#,
        r#"{"response":{"set":[{"name":"x-m","value":"{{ 'true' }}"}]}}"#,
    ] {
        assert!(
            !side(undone).response().always_sets("x-m", "true"),
            "{undone}"
        );
    }
}
