//! Behaviour tests: set, add and remove; what header reads see; what is never sent.

use super::*;

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
fn an_empty_set_removes_the_header_and_an_empty_add_is_skipped() {
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
fn header_lookups_ignore_case_and_read_the_last_value() {
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

/// What a template reads comes from its parse tree: a header function called through another
/// name, in a call block or with an escaped literal still has its header captured.
#[test]
fn header_reads_are_known_from_the_parse_tree_however_the_function_is_reached() {
    let headers = [("x-a", "1"), ("x'b", "2")];
    assert_eq!(
        render("{% set f = header %}{{ f('x-a') }}", &headers, "").as_deref(),
        Some("1")
    );
    assert_eq!(
        render("{% macro m() %}{{ caller() }}{% endmacro %}{% call m() %}{{ header('x-a') }}{% endcall %}", &headers, "").as_deref(),
        Some("1")
    );
    assert_eq!(
        render(
            r#"{{ header("x\'b") }}{{ header('x' ~ '-a') }}"#,
            &headers,
            ""
        )
        .as_deref(),
        Some("21")
    );
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
fn pseudo_headers_can_be_set_on_both_sides() {
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
fn upgrades_and_connect_are_detected_but_h2c_on_a_get_is_not() {
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
