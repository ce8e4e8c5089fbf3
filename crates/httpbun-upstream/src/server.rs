//! The glue between hyper and the handlers: reading a request, writing a reply or a stream.

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Channel, Full};
use hyper::body::{Bytes, Incoming as RequestBody};
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode};

use crate::Config;

pub type ResponseBody = BoxBody<Bytes, Infallible>;

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

/// Answers one request. Handlers may block (`/delay`), so they run on the blocking pool.
pub async fn serve(
    request: Request<RequestBody>,
    peer: IpAddr,
    config: Arc<Config>,
) -> Result<Response<ResponseBody>, Infallible> {
    let (parts, body) = request.into_parts();
    // Collecting sends `100 Continue` first when the client asked for it.
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes().to_vec(),
        Err(_) => {
            let reply = Reply::text(400, "Error reading request body\n");
            return Ok(complete(reply, Vec::new()));
        }
    };
    let target = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.to_string(), |pq| pq.as_str().to_string());
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path.to_string(), query.to_string()),
        None => (target.clone(), String::new()),
    };
    let incoming = Incoming {
        method: parts.method.as_str().to_string(),
        target,
        path,
        query,
        // Go keeps header bytes as they came; its JSON encoder turns invalid UTF-8 into U+FFFD.
        headers: parts
            .headers
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_string(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body,
        peer: Some(peer),
    };

    let answered = tokio::task::spawn_blocking(move || {
        let common = common_headers(&incoming, &config);
        (crate::routes::route(&incoming), common, config.stream_delay)
    })
    .await;
    Ok(match answered {
        Ok((Outcome::Reply(reply), common, _)) => complete(reply, common),
        Ok((Outcome::Stream(events), common, delay)) => stream(events, common, delay),
        // A handler panicked: answer like Go's server would for a broken handler.
        Err(_) => complete(Reply::text(500, "Internal Server Error\n"), Vec::new()),
    })
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

/// The reply's own headers win over the common ones of the same name.
fn merge_headers(
    common: Vec<(String, String)>,
    own: Vec<(String, String)>,
) -> Vec<(String, String)> {
    let mut all: Vec<(String, String)> = common
        .into_iter()
        .filter(|(name, _)| !own.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)))
        .collect();
    all.extend(own);
    all
}

fn response(
    status: u16,
    headers: Vec<(String, String)>,
    body: ResponseBody,
) -> Response<ResponseBody> {
    let mut response = Response::new(body);
    *response.status_mut() =
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let map = response.headers_mut();
    for (name, value) in headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            map.append(name, value);
        }
    }
    response
}

/// A complete body, always with `Content-Length` as httpbun sends it (none for 204 and 304).
fn complete(mut reply: Reply, common: Vec<(String, String)>) -> Response<ResponseBody> {
    if matches!(reply.status, 204 | 304) {
        reply.body.clear();
    }
    let headers = merge_headers(common, reply.headers);
    response(
        reply.status,
        headers,
        Full::new(Bytes::from(reply.body)).boxed(),
    )
}

/// A `text/event-stream` body whose events leave one by one, `delay` apart where asked. HTTP/1.1
/// clients get it chunked; hyper ends an HTTP/1.0 one by closing the connection.
fn stream(
    events: Vec<Event>,
    common: Vec<(String, String)>,
    delay: Duration,
) -> Response<ResponseBody> {
    let mut headers = vec![
        ("Content-Type".to_string(), "text/event-stream".to_string()),
        ("Cache-Control".to_string(), "no-cache".to_string()),
    ];
    headers.extend(common);
    let (mut sender, body) = Channel::<Bytes, Infallible>::new(1);
    tokio::spawn(async move {
        for event in events {
            let frame = Bytes::from(format!("data: {}\n\n", event.data));
            // The client is gone: nobody is left to send to.
            if sender.send_data(frame).await.is_err() {
                return;
            }
            if event.pause_after {
                tokio::time::sleep(delay).await;
            }
        }
    });
    response(200, headers, body.boxed())
}
