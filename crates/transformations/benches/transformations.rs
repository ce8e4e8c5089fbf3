//! Micro-benchmarks of one transformation application, without Envoy: the same work as the
//! Envoy benchmark's scenarios 4, 5 and 6 (see bench/ and the README's Performance section).

use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use transformations::memory::{MemoryMessage, MemoryStreamInfo};
use transformations::{
    BodyMode, MetadataSource, Options, Transformation, smart_header_transformation,
};

const REQUEST_HEADERS: &[(&str, &str)] = &[
    (":method", "GET"),
    (":path", "/bench/get?x=1"),
    (":authority", "bench.local"),
    (":scheme", "http"),
    ("user-agent", "wrk"),
    ("accept", "*/*"),
    ("x-forwarded-proto", "http"),
    ("x-request-id", "0f8c3a6e-8d1e-4a55-9a57-6d1c1a1f2b3c"),
];
const RESPONSE_HEADERS: &[(&str, &str)] = &[
    (":status", "200"),
    ("content-length", "2"),
    ("content-type", "text/plain"),
    ("date", "Thu, 26 Nov 2026 14:00:00 GMT"),
    ("server", "envoy"),
];

/// A request body of 1 KiB: three fields the templates read, plus messages they do not.
fn json_body() -> String {
    let mut messages = Vec::new();
    let mut i = 0;
    loop {
        messages.push(format!(
            r#"{{"role":"user","content":"message number {i} with some text"}}"#
        ));
        let body = format!(
            r#"{{"user":"alice","model":"gpt-4o","messages":[{}],"n":3}}"#,
            messages.join(",")
        );
        if body.len() >= 1000 {
            return body;
        }
        i += 1;
    }
}

/// The response side of a header-only transformation (what it reads of the request captured
/// beforehand, as the filter does at the request headers callback).
fn bench_response(c: &mut Criterion, name: &str, t: &Transformation) {
    let request = MemoryMessage::new(REQUEST_HEADERS, "");
    let response = MemoryMessage::new(RESPONSE_HEADERS, "");
    c.bench_function(name, |b| {
        b.iter_batched_ref(
            || response.clone(),
            |msg| {
                let capture = t.capture_request(&request);
                let mut info = MemoryStreamInfo::default();
                black_box(
                    t.apply_response_captured(msg, &capture, BodyMode::HeadersOnly, &mut info)
                        .unwrap(),
                );
            },
            BatchSize::SmallInput,
        )
    });
}

fn benches(c: &mut Criterion) {
    let options = Options::default();

    // Scenario 4: my-smart-header `{}`, i.e. a literal plus command operators.
    let smart = smart_header_transformation(b"{}", &options).unwrap();
    bench_response(c, "command operators (my-smart-header {})", &smart);

    // Scenario 5: the same two headers as a kgateway rustformation with Jinja templates.
    let jinja = Transformation::from_json(
        br#"{"response":{"set":[
            {"name":"x-custom-transformed","value":"true"},
            {"name":"x-smart-header",
             "value":"method={{ request_header(\":method\") }}&path={{ request_header(\":path\") }}"}]}}"#,
    )
    .unwrap();
    bench_response(c, "Jinja header calls (compiled to operators)", &jinja);

    // A template the engine must run: a condition and a filter.
    let rendered = Transformation::from_json(
        br#"{"response":{"set":[
            {"name":"x-custom-transformed","value":"true"},
            {"name":"x-smart-header",
             "value":"{% if request_header(\":method\") == \"GET\" %}get{% endif %}:{{ request_header(\":path\") | lower }}"}]}}"#,
    )
    .unwrap();
    bench_response(c, "template render (MiniJinja: if + filter)", &rendered);

    // Scenario 6: a new body from three fields of a 1 KiB JSON body, and two headers.
    let body_t = Transformation::from_json(
        br#"{"request":{"body":{"parseAs":"AsJson",
              "value":"{\"user\":\"{{ user }}\",\"model\":\"{{ model }}\",\"n\":{{ n }}}"},
            "set":[{"name":"x-user","value":"{{ user }}"},{"name":"x-model","value":"{{ model }}"}]}}"#,
    )
    .unwrap();
    let body = json_body();
    let mut headers = REQUEST_HEADERS.to_vec();
    headers[0] = (":method", "POST");
    headers.push(("content-type", "application/json"));
    let request = MemoryMessage::new(&headers, &body);
    {
        // The benchmark must measure the real transformation, not an error path.
        let mut msg = request.clone();
        body_t
            .apply_request(
                &mut msg,
                BodyMode::Buffered,
                &mut MemoryStreamInfo::default(),
            )
            .unwrap();
        assert_eq!(msg.body_str(), r#"{"user":"alice","model":"gpt-4o","n":3}"#);
        assert_eq!(msg.header("x-model").as_deref(), Some("gpt-4o"));
    }
    // The same output, but `context()` makes the whole body a template value (every key and
    // message converted), which the named-keys-only parse avoids.
    let whole_t = Transformation::from_json(
        br#"{"request":{"body":{"parseAs":"AsJson",
              "value":"{\"user\":\"{{ context().user }}\",\"model\":\"{{ model }}\",\"n\":{{ n }}}"},
            "set":[{"name":"x-user","value":"{{ user }}"},{"name":"x-model","value":"{{ model }}"}]}}"#,
    )
    .unwrap();
    for (name, t) in [
        ("JSON body transformation (1 KiB, AsJson)", &body_t),
        (
            "JSON body transformation (1 KiB, AsJson, whole body via context())",
            &whole_t,
        ),
    ] {
        c.bench_function(name, |b| {
            b.iter_batched_ref(
                || request.clone(),
                |msg| {
                    let mut info = MemoryStreamInfo::default();
                    black_box(t.apply_request(msg, BodyMode::Buffered, &mut info).unwrap());
                },
                BatchSize::SmallInput,
            )
        });
    }
}

/// A chat request of about `size` bytes: `model` first, then many messages.
fn chat_body(size: usize) -> String {
    let mut body = String::from(r#"{"model": "gpt-4", "temperature": 0.70, "messages": ["#);
    let mut i = 0;
    while body.len() < size {
        if i > 0 {
            body.push_str(", ");
        }
        body.push_str(&format!(
            r#"{{"role": "user", "content": "message {i}: caf\u00e9, \"quoted\" and a number 1.50e+2"}}"#
        ));
        i += 1;
    }
    body.push_str("]}");
    body
}

/// One request-side application, checked once so the benchmark measures the real work.
fn bench_request(
    c: &mut Criterion,
    name: &str,
    t: &Transformation,
    request: &MemoryMessage,
    info: &MemoryStreamInfo,
    check: impl Fn(&MemoryMessage),
) {
    let mut msg = request.clone();
    t.apply_request(&mut msg, BodyMode::Buffered, &mut info.clone())
        .unwrap();
    check(&msg);
    c.bench_function(name, |b| {
        b.iter_batched_ref(
            || (request.clone(), info.clone()),
            |(msg, info)| black_box(t.apply_request(msg, BodyMode::Buffered, info).unwrap()),
            BatchSize::LargeInput,
        )
    });
}

/// The functions beyond kgateway: a typical use of each, and `json_set` on a 2 MB chat request
/// against the whole-body AsJson template that makes the same change.
fn extension_benches(c: &mut Criterion) {
    let mut headers = REQUEST_HEADERS.to_vec();
    headers.push(("x-user", "id=4711; tenant=acme-eu; role=admin"));
    headers[1] = (":path", "/v1/items?page=2&debug=1&q=caf%C3%A9");
    let request = MemoryMessage::new(&headers, "");
    let info = MemoryStreamInfo::default().with_metadata(
        MetadataSource::Dynamic,
        "envoy.filters.http.jwt_authn",
        "sub",
        "alice",
    );
    let one = |value: &str| {
        Transformation::from_json(
            serde_json::json!({"request": {"set": [{"name": "x-out", "value": value}]}})
                .to_string()
                .as_bytes(),
        )
        .unwrap()
    };
    for (name, value, want) in [
        (
            "regex_extract (literal pattern, one header)",
            r#"{{ regex_extract(header("x-user"), "tenant=([a-z0-9-]+)", 1) }}"#,
            "acme-eu",
        ),
        ("query_param", r#"{{ query_param("q") }}"#, "café"),
        (
            "set_query_param (on :path)",
            r#"{{ set_query_param(header(":path"), "api-version", "2024-06-01") }}"#,
            "/v1/items?page=2&debug=1&q=caf%C3%A9&api-version=2024-06-01",
        ),
        (
            "remove_query_param (on :path)",
            r#"{{ remove_query_param(header(":path"), "debug") }}"#,
            "/v1/items?page=2&q=caf%C3%A9",
        ),
        (
            "metadata (one dynamic-metadata string)",
            r#"{{ metadata("envoy.filters.http.jwt_authn", "sub") }}"#,
            "alice",
        ),
    ] {
        let t = one(value);
        bench_request(c, name, &t, &request, &info, |m| {
            assert_eq!(m.header("x-out").as_deref(), Some(want), "{name}");
        });
    }

    let body = chat_body(2 * 1024 * 1024);
    let mut headers = REQUEST_HEADERS.to_vec();
    headers[0] = (":method", "POST");
    headers.push(("content-type", "application/json"));
    let request = MemoryMessage::new(&headers, &body);
    let json_set = Transformation::from_json(
        br#"{"request":{"body":{"value":"{{ json_set(body(), \"/model\", \"gpt-4o-mini\") }}"}}}"#,
    )
    .unwrap();
    let expected = body.replacen(r#""gpt-4""#, r#""gpt-4o-mini""#, 1);
    bench_request(
        c,
        "json_set /model in a 2 MB chat body",
        &json_set,
        &request,
        &MemoryStreamInfo::default(),
        |m| assert_eq!(m.body_str(), expected),
    );
    let whole = Transformation::from_json(
        br#"{"request":{"body":{"parseAs":"AsJson",
            "value":"{\"model\": \"gpt-4o-mini\", \"temperature\": {{ temperature }}, \"messages\": {{ messages | tojson }}}"}}}"#,
    )
    .unwrap();
    bench_request(
        c,
        "AsJson whole-body template, same change, 2 MB chat body",
        &whole,
        &request,
        &MemoryStreamInfo::default(),
        |m| {
            let got: serde_json::Value = serde_json::from_slice(&m.body).unwrap();
            let mut want: serde_json::Value = serde_json::from_str(&body).unwrap();
            want["model"] = "gpt-4o-mini".into();
            assert_eq!(got, want, "the same document, re-serialised");
        },
    );
}

criterion_group!(group, benches, extension_benches);
criterion_main!(group);
