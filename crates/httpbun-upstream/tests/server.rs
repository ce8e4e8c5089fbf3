//! End-to-end checks of every endpoint against the built binary.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Response, Server};

const DEFAULT_CONTENT: &str = "This is a mock chat response from httpbun. I received your messages and I'm responding with this placeholder text.";

fn keys(value: &Value) -> Vec<&str> {
    value
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect()
}

fn assert_powered_by(response: &Response) {
    let powered = response.header("X-Powered-By").expect("X-Powered-By");
    assert!(powered.starts_with("httpbun/"), "{powered}");
}

fn post_chat(server: &Server, body: &str) -> Response {
    server.request(
        "POST",
        "/llm/chat/completions",
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    )
}

#[test]
fn chat_completion_shape() {
    let server = Server::start();
    let response = post_chat(
        &server,
        r#"{"messages":[{"role":"user","content":"Hello there"}]}"#,
    );
    assert_eq!(response.status, 200);
    assert_eq!(response.header("Content-Type"), Some("application/json"));
    assert_powered_by(&response);

    let text = response.text();
    assert!(text.starts_with("{\n  \"id\": \"chatcmpl-"), "{text}");
    assert!(text.ends_with("}\n"), "trailing newline: {text:?}");

    let body = response.json();
    assert_eq!(
        keys(&body),
        ["id", "object", "created", "model", "choices", "usage"]
    );
    let id = body["id"].as_str().unwrap();
    let suffix = id.strip_prefix("chatcmpl-").unwrap();
    assert_eq!(suffix.len(), 24);
    assert!(suffix.chars().all(|c| c.is_ascii_alphanumeric()), "{id}");
    assert_eq!(body["object"], "chat.completion");
    let created = body["created"].as_u64().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(created.abs_diff(now) < 60);
    assert_eq!(body["model"], "gpt-4");
    assert_eq!(
        body["choices"],
        json!([{
            "index": 0,
            "message": {"role": "assistant", "content": DEFAULT_CONTENT},
            "finish_reason": "stop"
        }])
    );
    assert_eq!(
        keys(&body["choices"][0]),
        ["index", "message", "finish_reason"]
    );
    // "user: Hello there\n" is 18 bytes: (18 + 3) / 4 = 5.
    let completion = DEFAULT_CONTENT.len().div_ceil(4);
    assert_eq!(
        body["usage"],
        json!({"prompt_tokens": 5, "completion_tokens": completion, "total_tokens": 5 + completion})
    );
    assert_eq!(
        keys(&body["usage"]),
        ["prompt_tokens", "completion_tokens", "total_tokens"]
    );

    // A second call gets a different id.
    let again = post_chat(&server, "{}").json();
    assert_ne!(again["id"], body["id"]);
    assert_eq!(again["usage"]["prompt_tokens"], 0);
}

#[test]
fn chat_completion_model_and_content_override() {
    let server = Server::start();
    let body = post_chat(
        &server,
        r#"{"model":"gpt-4o-mini","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hi"}],"httpbun":{"content":"abc def"}}"#,
    )
    .json();
    assert_eq!(body["model"], "gpt-4o-mini");
    assert_eq!(body["choices"][0]["message"]["content"], "abc def");
    // "system: be brief\nuser: hi\n" is 26 bytes -> 7; "abc def" is 7 bytes -> 2.
    assert_eq!(
        body["usage"],
        json!({"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9})
    );

    let body = server
        .request("POST", "/llm/v1/chat/completions", &[], br#"{"n": 2}"#)
        .json();
    let indexes: Vec<&Value> = body["choices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| &c["index"])
        .collect();
    assert_eq!(indexes, [&json!(0), &json!(1)]);
}

#[test]
fn chat_completion_wrong_method() {
    let server = Server::start();
    for method in ["GET", "PUT", "DELETE"] {
        let response = server.request(method, "/llm/chat/completions", &[], b"");
        assert_eq!(response.status, 405, "{method}");
        assert_eq!(response.header("Allow"), Some("POST"));
        assert_eq!(response.header("Content-Type"), Some("application/json"));
        assert_powered_by(&response);
        assert_eq!(response.json(), json!({"error": "Method not allowed"}));
        assert!(response.text().ends_with("}\n"));
    }
}

#[test]
fn chat_completion_invalid_json() {
    let server = Server::start();
    for body in [
        "",
        "{not json",
        "[1,2]",
        r#"{"model": 5}"#,
        r#"{"stream": "yes"}"#,
    ] {
        let response = post_chat(&server, body);
        assert_eq!(response.status, 400, "{body:?}");
        assert_eq!(response.header("Content-Type"), Some("application/json"));
        let error = response.json();
        assert_eq!(keys(&error), ["error"]);
        assert_eq!(error["error"]["type"], "invalid_request_error");
        let message = error["error"]["message"].as_str().unwrap();
        assert!(
            message.starts_with("Invalid JSON in request body: "),
            "{message}"
        );
    }
    let empty = post_chat(&server, "").json();
    assert_eq!(
        empty["error"]["message"],
        "Invalid JSON in request body: unexpected end of JSON input"
    );
}

/// Reads the raw event stream: each chunk must hold exactly one `data: ...\n\n` event.
fn read_events(conn: &mut support::Conn) -> Vec<(Instant, String)> {
    let mut events = Vec::new();
    while let Some(chunk) = conn.read_chunk() {
        let text = String::from_utf8(chunk).unwrap();
        let data = text
            .strip_prefix("data: ")
            .and_then(|t| t.strip_suffix("\n\n"))
            .unwrap_or_else(|| panic!("bad event framing {text:?}"));
        assert!(!data.contains('\n'), "one event per chunk: {text:?}");
        events.push((Instant::now(), data.to_string()));
    }
    events
}

#[test]
fn chat_completion_stream_framing() {
    let server = Server::start();
    let mut conn = server.connect();
    let body = r#"{"model":"m1","stream":true,"httpbun":{"content":"one two  three"}}"#;
    conn.send(
        "POST",
        "/llm/chat/completions",
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    );
    let (status, headers) = conn.read_head();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(status, 200);
    assert_eq!(header("Content-Type"), Some("text/event-stream"));
    assert_eq!(header("Cache-Control"), Some("no-cache"));
    assert_eq!(header("Transfer-Encoding"), Some("chunked"));
    assert!(header("Content-Length").is_none());
    assert!(header("X-Powered-By").unwrap().starts_with("httpbun/"));

    let events = read_events(&mut conn);
    let data: Vec<&str> = events.iter().map(|(_, d)| d.as_str()).collect();
    assert_eq!(data.len(), 1 + 3 + 1 + 1, "{data:#?}");
    assert_eq!(*data.last().unwrap(), "[DONE]");

    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let id = chunks[0]["id"].as_str().unwrap();
    assert!(id.starts_with("chatcmpl-") && id.len() == "chatcmpl-".len() + 24);
    for chunk in &chunks {
        assert_eq!(keys(chunk), ["id", "object", "created", "model", "choices"]);
        assert_eq!(chunk["id"], id);
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["model"], "m1");
        assert_eq!(chunk["choices"][0]["index"], 0);
    }
    assert_eq!(
        chunks[0]["choices"][0]["delta"],
        json!({"role": "assistant"})
    );
    assert_eq!(chunks[0]["choices"][0]["finish_reason"], Value::Null);
    let words: Vec<&str> = chunks[1..4]
        .iter()
        .map(|c| c["choices"][0]["delta"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(words, ["one ", "two  ", "three"]);
    assert!(
        chunks[1..4]
            .iter()
            .all(|c| c["choices"][0]["finish_reason"].is_null())
    );
    assert_eq!(chunks[4]["choices"][0]["delta"], json!({}));
    assert_eq!(chunks[4]["choices"][0]["finish_reason"], "stop");

    // The connection stays usable after the stream.
    conn.send("GET", "/get", &[], b"");
    assert_eq!(conn.read_response().status, 200);
}

#[test]
fn chat_completion_stream_default_content_and_pacing() {
    let delay = Duration::from_millis(120);
    let server = Server::start_with(&[("HTTPBUN_STREAM_DELAY_MS", "120")]);
    let mut conn = server.connect();
    conn.send(
        "POST",
        "/llm/chat/completions",
        &[],
        br#"{"stream":true,"httpbun":{"content":"a b c"}}"#,
    );
    let sent = Instant::now();
    let (status, _) = conn.read_head();
    assert_eq!(status, 200);
    let events = read_events(&mut conn);
    assert_eq!(events.len(), 6);
    // The role delta is sent at once, then each event only after the pause: proof that every
    // event is flushed on its own rather than buffered to the end.
    assert!(
        events[0].0 - sent < delay,
        "first event late: {:?}",
        events[0].0 - sent
    );
    for pair in events[..5].windows(2) {
        let gap = pair[1].0 - pair[0].0;
        assert!(gap >= delay * 3 / 4, "events not paced: {gap:?}");
    }

    let server = Server::start();
    let response = server.request("POST", "/llm/chat/completions", &[], br#"{"stream":true}"#);
    let text = response.text();
    let content: String = text
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .filter_map(|d| {
            let v: Value = serde_json::from_str(d).unwrap();
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    assert_eq!(content, DEFAULT_CONTENT);
    assert!(text.ends_with("data: [DONE]\n\n"));
}

#[test]
fn get_echo() {
    let server = Server::start();
    let response = server.request(
        "GET",
        "/get?b=2&a=1&a=3&sp=x+y%21",
        &[
            ("x-smart-header", "one"),
            ("X-SMART-HEADER", "two"),
            ("accept", "application/json"),
            ("X-Httpbun-Internal", "hidden"),
        ],
        b"",
    );
    assert_eq!(response.status, 200);
    assert_eq!(response.header("Content-Type"), Some("application/json"));
    assert_powered_by(&response);
    assert!(response.text().ends_with("}\n"));
    let body = response.json();
    assert_eq!(
        keys(&body),
        [
            "method", "args", "headers", "origin", "url", "form", "data", "json", "files"
        ]
    );
    assert_eq!(body["method"], "GET");
    assert_eq!(
        body["args"],
        json!({"a": ["1", "3"], "b": "2", "sp": "x y!"})
    );
    assert_eq!(keys(&body["args"]), ["a", "b", "sp"]);
    assert_eq!(
        body["headers"],
        json!({"Accept": "application/json", "Host": "test.local", "X-Smart-Header": ["one", "two"]})
    );
    assert_eq!(body["origin"], "127.0.0.1");
    assert_eq!(body["url"], "http://test.local/get?b=2&a=1&a=3&sp=x+y%21");
    assert_eq!(body["form"], json!({}));
    assert_eq!(body["data"], "");
    assert_eq!(body["json"], Value::Null);
    assert_eq!(body["files"], json!({}));

    // httpbun ignores a trailing slash.
    assert_eq!(server.get("/get/").status, 200);
}

#[test]
fn method_routes_check_the_method() {
    let server = Server::start();
    for (path, method) in [
        ("/get", "GET"),
        ("/post", "POST"),
        ("/put", "PUT"),
        ("/patch", "PATCH"),
        ("/delete", "DELETE"),
    ] {
        let ok = server.request(method, path, &[], b"");
        assert_eq!(ok.status, 200, "{method} {path}");
        assert_eq!(ok.json()["method"], method);

        let wrong = if method == "GET" { "POST" } else { "GET" };
        let refused = server.request(wrong, path, &[], b"");
        assert_eq!(refused.status, 405, "{wrong} {path}");
        assert_eq!(
            refused.header("Allow"),
            Some(format!("{method}, OPTIONS").as_str())
        );
        assert!(refused.body.is_empty());
        assert_powered_by(&refused);
    }
    // CORS preflights pass.
    assert_eq!(server.request("OPTIONS", "/post", &[], b"").status, 200);
}

#[test]
fn post_bodies() {
    let server = Server::start();
    let json_body = br#"{"z": 1, "a": {"y": [true, null], "b": "x"}}"#;
    let body = server
        .request(
            "POST",
            "/post",
            &[("Content-Type", "application/json; charset=utf-8")],
            json_body,
        )
        .json();
    assert_eq!(body["data"], std::str::from_utf8(json_body).unwrap());
    assert_eq!(
        body["json"],
        json!({"a": {"b": "x", "y": [true, null]}, "z": 1})
    );
    assert_eq!(keys(&body["json"]), ["a", "z"]);
    assert_eq!(
        body["headers"]["Content-Length"],
        json_body.len().to_string()
    );

    let body = server
        .request(
            "POST",
            "/post",
            &[("Content-Type", "application/json")],
            b"{broken",
        )
        .json();
    assert_eq!(body["data"], "{broken");
    assert_eq!(body["json"], Value::Null);

    let body = server
        .request(
            "PUT",
            "/put",
            &[("Content-Type", "application/x-www-form-urlencoded")],
            b"name=a+b&tag=1&tag=2&e=%E2%9C%93",
        )
        .json();
    assert_eq!(
        body["form"],
        json!({"e": "✓", "name": "a b", "tag": ["1", "2"]})
    );
    assert_eq!(body["data"], "");
    assert_eq!(body["json"], Value::Null);

    let body = server
        .request(
            "PATCH",
            "/patch",
            &[("Content-Type", "text/plain")],
            "héllo\nworld".as_bytes(),
        )
        .json();
    assert_eq!(body["data"], "héllo\nworld");
    assert_eq!(body["form"], json!({}));

    // Bytes that are not UTF-8 come back base64-encoded, as Go encodes a byte slice.
    let body = server
        .request(
            "POST",
            "/post",
            &[("Content-Type", "application/octet-stream")],
            &[0xff, 0xfe, 0x00],
        )
        .json();
    assert_eq!(body["data"], "//4A");

    // A chunked request body is read in full and its coding listed like httpbun does.
    let body = server
        .request(
            "POST",
            "/post",
            &[("Transfer-Encoding", "chunked")],
            &[b'q'; 2500],
        )
        .json();
    assert_eq!(body["data"].as_str().unwrap().len(), 2500);
    assert_eq!(body["headers"]["Transfer-Encoding"], json!(["chunked"]));
}

#[test]
fn anything_accepts_every_method_and_subpath() {
    let server = Server::start();
    for (method, path) in [
        ("GET", "/anything"),
        ("POST", "/anything/deep/path?x=1"),
        ("DELETE", "/anything/"),
        ("PATCH", "/any"),
        ("CUSTOM", "/anything/z"),
    ] {
        let response = server.request(method, path, &[], b"");
        assert_eq!(response.status, 200, "{method} {path}");
        let body = response.json();
        assert_eq!(body["method"], method);
        assert_eq!(body["url"], format!("http://test.local{path}"));
    }
    // HEAD gets the headers only; the connection stays in step.
    let mut conn = server.connect();
    conn.send("HEAD", "/anything", &[], b"");
    let (status, _) = conn.read_head();
    assert_eq!(status, 200);
    conn.send("GET", "/anything", &[], b"");
    assert_eq!(conn.read_response().json()["method"], "GET");
    assert_eq!(server.get("/anythingelse").status, 404);
}

#[test]
fn headers_endpoint() {
    let server = Server::start();
    let response = server.request(
        "GET",
        "/headers",
        &[("x-custom-thing", "v"), ("Authorization", "Bearer t")],
        b"",
    );
    assert_eq!(response.status, 200);
    assert_eq!(
        response.json(),
        json!({"headers": {"Authorization": "Bearer t", "Host": "test.local", "X-Custom-Thing": "v"}})
    );
}

#[test]
fn large_bodies_round_trip() {
    let server = Server::start();
    let size = 8 << 20;
    let payload: Vec<u8> = (0..size).map(|i| b'a' + (i % 26) as u8).collect();
    let response = server.request(
        "POST",
        "/anything",
        &[("Content-Type", "text/plain")],
        &payload,
    );
    assert_eq!(response.status, 200);
    let body = response.json();
    assert_eq!(body["data"].as_str().unwrap().as_bytes(), &payload[..]);
    assert_eq!(body["headers"]["Content-Length"], size.to_string());

    // Also when the client waits for `100 Continue`.
    let response = server.request(
        "PUT",
        "/put",
        &[("Content-Type", "text/plain"), ("Expect", "100-continue")],
        &payload,
    );
    assert_eq!(response.status, 200);
    assert_eq!(response.json()["data"].as_str().unwrap().len(), size);
}

#[test]
fn status_codes() {
    let server = Server::start();
    for code in [200u16, 201, 302, 400, 418, 500, 503, 599] {
        let response = server.get(&format!("/status/{code}"));
        assert_eq!(response.status, code);
        assert_powered_by(&response);
        let body = response.json();
        assert_eq!(keys(&body), ["code", "description"]);
        assert_eq!(body["code"], code);
    }
    assert_eq!(
        server.get("/status/418").json()["description"],
        "I'm a teapot"
    );
    assert_eq!(
        server.get("/status/503").json()["description"],
        "Service Unavailable"
    );
    assert_eq!(server.get("/status/599").json()["description"], "");

    let no_content = server.get("/status/204");
    assert_eq!(no_content.status, 204);
    assert!(no_content.body.is_empty());

    let plain = server.request("GET", "/status/404", &[("Accept", "text/plain")], b"");
    assert_eq!((plain.status, plain.text().as_str()), (404, "Not Found"));

    let either = server.get("/status/201,202").status;
    assert!(either == 201 || either == 202);

    for bad in ["abc", "99", "600", "-1", "2x"] {
        let response = server.get(&format!("/status/{bad}"));
        assert_eq!(response.status, 400, "{bad}");
        assert_powered_by(&response);
    }
}

#[test]
fn delay() {
    let server = Server::start();
    let start = Instant::now();
    let response = server.get("/delay/0.3");
    assert!(start.elapsed() >= Duration::from_millis(300));
    assert_eq!(response.status, 200);
    assert_eq!(response.text(), "OK");
    assert_powered_by(&response);

    assert_eq!(server.get("/delay/0").text(), "OK");
    for bad in ["301", "-1", "abc", "inf", "NaN"] {
        assert_eq!(server.get(&format!("/delay/{bad}")).status, 400, "{bad}");
    }
}

#[test]
fn keep_alive_and_concurrency() {
    let server = Server::start();
    let mut conn = server.connect();
    for i in 0..5 {
        conn.send(
            "POST",
            &format!("/post?i={i}"),
            &[],
            format!("body {i}").as_bytes(),
        );
        let response = conn.read_response();
        assert_eq!(response.status, 200);
        assert_eq!(response.json()["args"]["i"], i.to_string());
        assert_eq!(response.json()["data"], format!("body {i}"));
    }

    // Responses larger than one TCP segment arrive without a delayed-ACK stall (~40 ms each
    // when the server's writes are held back by Nagle's algorithm).
    let query = "x".repeat(3000);
    let start = Instant::now();
    for _ in 0..20 {
        conn.send("GET", &format!("/anything?q={query}"), &[], b"");
        assert_eq!(conn.read_response().status, 200);
    }
    assert!(
        start.elapsed() < Duration::from_millis(500),
        "{:?}",
        start.elapsed()
    );

    // Slow requests on separate connections overlap instead of queueing.
    let start = Instant::now();
    let threads: Vec<_> = (0..6)
        .map(|_| {
            let addr = server.addr.clone();
            std::thread::spawn(move || {
                let mut conn = support::Conn::open(&addr);
                conn.send("GET", "/delay/1", &[], b"");
                conn.read_response().status
            })
        })
        .collect();
    for thread in threads {
        assert_eq!(thread.join().unwrap(), 200);
    }
    assert!(
        start.elapsed() < Duration::from_millis(2500),
        "{:?}",
        start.elapsed()
    );
}

/// A proxy opens many connections at once and keeps them; each new one must be served while the
/// older ones stay open (tiny_http's pool left some unanswered, which Envoy reported as 504).
#[test]
fn bursts_of_new_connections_are_all_served() {
    let server = Server::start();
    let mut kept = Vec::new();
    for round in 0..12 {
        let mut burst: Vec<support::Conn> = (0..32).map(|_| server.connect()).collect();
        for conn in &mut burst {
            conn.send("GET", "/get", &[], b"");
        }
        for (i, conn) in burst.iter_mut().enumerate() {
            // The read timeout turns a connection left unserved into a failure, not a hang.
            assert_eq!(
                conn.read_response().status,
                200,
                "round {round}, connection {i}"
            );
        }
        let rest = burst.split_off(16);
        kept.extend(burst);
        drop(rest);
    }
}

#[test]
fn unknown_path_is_404() {
    let server = Server::start();
    for path in ["/", "/nope", "/status", "/llm/other", "/delay/1/2"] {
        let response = server.get(path);
        assert_eq!(response.status, 404, "{path}");
        assert_powered_by(&response);
    }
}

#[test]
fn sigterm_exits_cleanly() {
    let server = Server::start();
    assert_eq!(server.get("/get").status, 200);
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &server.pid().to_string()])
        .status()
        .expect("run kill");
    assert!(killed.success());
    let status = server.wait();
    assert!(status.success(), "{status:?}");
}
