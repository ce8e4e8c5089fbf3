//! The glue between tiny_http and the handlers: reading a request, writing a reply or a stream.

use std::io::{Cursor, Write};
use std::net::IpAddr;
use std::time::Duration;

use crate::Config;

/// A request with its body read in full, as the handlers see it.
pub struct Incoming {
    pub method: String,
    /// The request target as received (`/anything?x=1`).
    pub target: String,
    /// The target's path, without the query string.
    pub path: String,
    /// The raw query string, without `?`.
    pub query: String,
    /// Header names and values in the order received, names as sent.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub peer: Option<IpAddr>,
}

impl Incoming {
    /// The last value of a header, like httpbun's `HeaderValueLast`.
    pub fn header_last(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .rev()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A complete response.
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    /// httpbun's JSON: two-space indent and a trailing newline.
    pub fn json(status: u16, value: &serde_json::Value) -> Reply {
        let mut body = serde_json::to_string_pretty(value).unwrap_or_default();
        body.push('\n');
        Reply {
            status,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: body.into_bytes(),
        }
    }

    /// Go's server sniffs text bodies as `text/plain; charset=utf-8`.
    pub fn text(status: u16, body: impl Into<String>) -> Reply {
        Reply {
            status,
            headers: vec![("Content-Type".into(), "text/plain; charset=utf-8".into())],
            body: body.into().into_bytes(),
        }
    }

    pub fn empty(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Reply {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// One server-sent event body (without the `data: ` framing) and the pause that follows it.
pub struct Event {
    pub data: String,
    pub pause_after: bool,
}

pub enum Outcome {
    Reply(Reply),
    /// A `text/event-stream` response whose events are flushed one by one.
    Stream(Vec<Event>),
}

pub fn serve(mut request: tiny_http::Request, config: &Config) {
    let mut body = Vec::with_capacity(request.body_length().unwrap_or(0).min(64 << 20));
    // Reading sends `100 Continue` first when the client asked for it.
    if request.as_reader().read_to_end(&mut body).is_err() {
        let reply = Reply::text(400, "Error reading request body\n");
        send(request, reply, Vec::new());
        return;
    }

    let target = request.url().to_string();
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path.to_string(), query.to_string()),
        None => (target.clone(), String::new()),
    };
    let incoming = Incoming {
        method: request.method().as_str().to_string(),
        target,
        path,
        query,
        headers: request
            .headers()
            .iter()
            .map(|h| {
                (
                    h.field.as_str().as_str().to_string(),
                    h.value.as_str().to_string(),
                )
            })
            .collect(),
        body,
        peer: request.remote_addr().map(|a| a.ip()),
    };

    let common = common_headers(&incoming, config);
    match crate::routes::route(&incoming) {
        Outcome::Reply(reply) => send(request, reply, common),
        Outcome::Stream(events) => stream(request, events, common, config.stream_delay),
    }
}

/// Headers httpbun puts on every response.
fn common_headers(incoming: &Incoming, config: &Config) -> Vec<(String, String)> {
    let mut headers = vec![("X-Powered-By".to_string(), config.powered_by.clone())];
    // The exact origin, since `*` is refused for credentialed requests.
    if let Some(origin) = incoming.header_last("Origin").filter(|o| !o.is_empty()) {
        headers.push(("Access-Control-Allow-Origin".into(), origin.into()));
        headers.push(("Access-Control-Allow-Credentials".into(), "true".into()));
    }
    for (request, response) in [
        (
            "Access-Control-Request-Headers",
            "Access-Control-Allow-Headers",
        ),
        (
            "Access-Control-Request-Method",
            "Access-Control-Allow-Methods",
        ),
    ] {
        if let Some(value) = incoming.header_last(request).filter(|v| !v.is_empty()) {
            headers.push((response.into(), value.into()));
        }
    }
    headers
}

fn send(request: tiny_http::Request, mut reply: Reply, common: Vec<(String, String)>) {
    // These statuses carry no body; tiny_http would otherwise announce its length and send none,
    // a framing proxies reject.
    if matches!(reply.status, 204 | 304) {
        reply.body.clear();
    }
    let mut all: Vec<(String, String)> = common
        .into_iter()
        .filter(|(name, _)| {
            !reply
                .headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case(name))
        })
        .collect();
    all.extend(reply.headers);
    let headers = all
        .into_iter()
        .filter_map(|(name, value)| tiny_http::Header::from_bytes(name, value).ok())
        .collect();
    let length = reply.body.len();
    let response = tiny_http::Response::new(
        tiny_http::StatusCode(reply.status),
        headers,
        Cursor::new(reply.body),
        Some(length),
        None,
    )
    // httpbun always sends Content-Length for complete bodies, whatever their size.
    .with_chunked_threshold(usize::MAX);
    // The client may be gone; there is nobody left to tell.
    let _ = request.respond(response);
}

fn stream(
    request: tiny_http::Request,
    events: Vec<Event>,
    common: Vec<(String, String)>,
    delay: Duration,
) {
    let mut headers = vec![
        ("Content-Type".to_string(), "text/event-stream".to_string()),
        ("Cache-Control".to_string(), "no-cache".to_string()),
    ];
    headers.extend(common);

    // HTTP/1.0 has no chunked encoding: pace the events the same way, then send them as one body.
    if *request.http_version() == tiny_http::HTTPVersion(1, 0) {
        let mut body = String::new();
        for event in &events {
            body.push_str(&format!("data: {}\n\n", event.data));
            if event.pause_after {
                std::thread::sleep(delay);
            }
        }
        send(
            request,
            Reply {
                status: 200,
                headers: Vec::new(),
                body: body.into_bytes(),
            },
            headers,
        );
        return;
    }

    // tiny_http's own chunked writer buffers 8 KiB before sending, which would hold the events
    // back; writing the framing here lets every event leave on its own.
    let mut writer = request.into_writer();
    let mut head = String::from("HTTP/1.1 200 OK\r\n");
    for (name, value) in &headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("Transfer-Encoding: chunked\r\n\r\n");
    if writer
        .write_all(head.as_bytes())
        .and_then(|()| writer.flush())
        .is_err()
    {
        return;
    }
    for event in &events {
        let frame = format!("data: {}\n\n", event.data);
        let chunk = format!("{:x}\r\n{frame}\r\n", frame.len());
        if writer
            .write_all(chunk.as_bytes())
            .and_then(|()| writer.flush())
            .is_err()
        {
            return;
        }
        if event.pause_after {
            std::thread::sleep(delay);
        }
    }
    let _ = writer.write_all(b"0\r\n\r\n").and_then(|()| writer.flush());
}
