//! Behaviour tests: kgateway's template functions and ours.

use super::*;

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
fn env_reads_the_lookup_given_and_an_unset_name_renders_empty() {
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
fn query_param_reads_the_first_value_decoded_and_the_setters_keep_the_rest() {
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
