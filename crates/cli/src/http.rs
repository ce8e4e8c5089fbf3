//! HTTP/1.1 messages: reading request/response files, printing messages with marked changes.

use std::collections::{HashMap, HashSet};

use base64::Engine as _;
use serde_json::{Value, json};
use transformations::memory::MemoryMessage;

/// Parses an HTTP/1.1 request file into Envoy's view of it: pseudo-headers `:method`, `:path`,
/// `:authority` (from `Host`), `:scheme`, then the other headers with lowercased names.
pub fn parse_request(bytes: &[u8], name: &str) -> Result<MemoryMessage, String> {
    let (head, body) = split(bytes, name)?;
    let mut lines = head.lines();
    let first = lines.next().unwrap_or("");
    let parts: Vec<&str> = first.split_whitespace().collect();
    let [method, target, version] = parts[..] else {
        return Err(not_http(
            name,
            "request",
            "the first line must be `METHOD /path HTTP/1.1`",
        ));
    };
    if !version.starts_with("HTTP/1.") || !is_token(method) {
        return Err(not_http(
            name,
            "request",
            "the first line must be `METHOD /path HTTP/1.1`",
        ));
    }
    let headers = parse_headers(lines, name)?;
    let (authority, path) = split_target(target);
    let authority = authority.or_else(|| {
        headers
            .iter()
            .rev()
            .find(|(n, _)| n == "host")
            .map(|(_, v)| v.clone())
    });
    build_request(method, &path, authority.as_deref(), headers, body)
}

/// Splits `http://host/path` into host and path; a plain `/path` has no host.
pub fn split_target(target: &str) -> (Option<String>, String) {
    for scheme in ["http://", "https://"] {
        if let Some(rest) = target.strip_prefix(scheme) {
            let (host, path) = match rest.find('/') {
                Some(i) => (&rest[..i], &rest[i..]),
                None => (rest, "/"),
            };
            return (Some(host.to_owned()), path.to_owned());
        }
    }
    (None, target.to_owned())
}

/// The request Envoy's filters see. Without `Host`, `:authority` is `localhost`. A body without a
/// `content-length` gets one, as a client sending it would.
pub fn build_request(
    method: &str,
    path: &str,
    authority: Option<&str>,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
) -> Result<MemoryMessage, String> {
    if !path.starts_with('/') && method != "CONNECT" {
        return Err(format!("the request path must start with '/': {path:?}"));
    }
    let mut msg = MemoryMessage::default();
    let push = |m: &mut MemoryMessage, n: &str, v: &str| m.headers.push((n.into(), v.into()));
    push(&mut msg, ":authority", authority.unwrap_or("localhost"));
    push(&mut msg, ":path", path);
    push(&mut msg, ":method", method);
    push(&mut msg, ":scheme", "http");
    let mut has_length = false;
    for (n, v) in headers {
        if n == "host" {
            continue;
        }
        has_length |= n == "content-length" || n == "transfer-encoding";
        msg.headers.push((n, v.into_bytes()));
    }
    if !body.is_empty() && !has_length {
        push(&mut msg, "content-length", &body.len().to_string());
    }
    msg.body = body;
    Ok(msg)
}

/// Parses an HTTP/1.1 response file (`HTTP/1.1 200 OK`, headers, body).
pub fn parse_response(bytes: &[u8], name: &str) -> Result<MemoryMessage, String> {
    let (head, body) = split(bytes, name)?;
    let mut lines = head.lines();
    let first = lines.next().unwrap_or("");
    let mut parts = first.split_whitespace();
    let (Some(version), Some(status)) = (parts.next(), parts.next()) else {
        return Err(not_http(
            name,
            "response",
            "the first line must be `HTTP/1.1 200 OK`",
        ));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(not_http(
            name,
            "response",
            "the first line must be `HTTP/1.1 200 OK`",
        ));
    }
    let status = parse_status(status)?;
    build_response(status, parse_headers(lines, name)?, body)
}

pub fn parse_status(status: &str) -> Result<u16, String> {
    match status.parse::<u16>() {
        Ok(s) if (100..=599).contains(&s) => Ok(s),
        _ => Err(format!("not an HTTP status: {status:?}")),
    }
}

pub fn build_response(
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
) -> Result<MemoryMessage, String> {
    let mut msg = MemoryMessage::default();
    msg.headers
        .push((":status".into(), status.to_string().into_bytes()));
    let mut has_length = false;
    for (n, v) in headers {
        has_length |= n == "content-length" || n == "transfer-encoding";
        msg.headers.push((n, v.into_bytes()));
    }
    if !has_length {
        msg.headers
            .push(("content-length".into(), body.len().to_string().into_bytes()));
    }
    msg.body = body;
    Ok(msg)
}

fn not_http(name: &str, what: &str, why: &str) -> String {
    format!("{name}: not an HTTP/1.1 {what}: {why}")
}

/// Head (as text) and body. The head ends at the first empty line (CRLF or LF).
fn split<'a>(bytes: &'a [u8], name: &str) -> Result<(String, Vec<u8>), String> {
    let (head, body): (&'a [u8], &'a [u8]) = match find(bytes, b"\r\n\r\n") {
        Some(i) => (&bytes[..i], &bytes[i + 4..]),
        None => match find(bytes, b"\n\n") {
            Some(i) => (&bytes[..i], &bytes[i + 2..]),
            None => (bytes, &[]),
        },
    };
    let head = std::str::from_utf8(head)
        .map_err(|_| format!("{name}: the message head is not text"))?
        .replace("\r\n", "\n");
    Ok((head, body.to_vec()))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// `name: value` lines; names lowercased as Envoy's HTTP/1 codec presents them.
fn parse_headers<'a>(
    lines: impl Iterator<Item = &'a str>,
    name: &str,
) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for (i, line) in lines.enumerate() {
        out.push(parse_header(line).map_err(|e| format!("{name}: line {}: {e}", i + 2))?);
    }
    Ok(out)
}

/// One `name: value` (as in a file or a `-H` flag).
pub fn parse_header(line: &str) -> Result<(String, String), String> {
    let (n, v) = line
        .split_once(':')
        .ok_or_else(|| format!("not a header line (`name: value`): {line:?}"))?;
    if !is_token(n) {
        return Err(format!("not a header name: {n:?}"));
    }
    Ok((n.to_ascii_lowercase(), v.trim().to_owned()))
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// How a header changed between two versions of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Same,
    Added,
    Changed,
}

/// Every value of every header of `m`, by lowercased name: one pass, so comparing two messages
/// stays linear in their headers (a request may carry thousands).
fn values_by_name(m: &MemoryMessage) -> HashMap<String, HashSet<&[u8]>> {
    let mut map: HashMap<String, HashSet<&[u8]>> = HashMap::with_capacity(m.headers.len());
    for (n, v) in &m.headers {
        map.entry(n.to_ascii_lowercase())
            .or_default()
            .insert(v.as_slice());
    }
    map
}

/// A header line: lowercased name and value.
pub type Header = (String, Vec<u8>);
/// A header line of the transformed message and how it changed.
pub type MarkedHeader = (String, Vec<u8>, Change);

/// Each header of `after` with its change, then the names `before` had and `after` lacks.
pub fn diff(before: &MemoryMessage, after: &MemoryMessage) -> (Vec<MarkedHeader>, Vec<Header>) {
    let mut lines = Vec::new();
    let before_values = values_by_name(before);
    let after_values = values_by_name(after);
    let none: HashSet<&[u8]> = HashSet::new();
    for (n, v) in &after.headers {
        let n = n.to_ascii_lowercase();
        let old = before_values.get(&n).unwrap_or(&none);
        let change = if old.contains(&v.as_slice()) {
            Change::Same
        } else if old.is_empty() {
            Change::Added
        } else {
            Change::Changed
        };
        lines.push((n, v.clone(), change));
    }
    let mut removed = Vec::new();
    for (n, v) in &before.headers {
        if !after_values.contains_key(&n.to_ascii_lowercase()) {
            removed.push((n.to_ascii_lowercase(), v.clone()));
        }
    }
    (lines, removed)
}

fn text(v: &[u8]) -> String {
    String::from_utf8_lossy(v).into_owned()
}

/// A body is shown as text when it is UTF-8 without control characters other than tab, CR, LF.
pub fn is_text(body: &[u8]) -> bool {
    std::str::from_utf8(body).is_ok_and(|s| {
        !s.chars()
            .any(|c| c.is_control() && !matches!(c, '\t' | '\r' | '\n'))
    })
}

/// At most this much of a body is printed in the text format.
const MAX_PRINTED_BODY: usize = 64 * 1024;

/// Prints a message: start line, headers with their change marks (`+` added, `~` changed,
/// `-` removed), an empty line and the body.
pub fn print_message(start: &str, before: &MemoryMessage, after: &MemoryMessage, out: &mut String) {
    out.push_str(start);
    out.push('\n');
    let (lines, removed) = diff(before, after);
    for (n, v, change) in lines {
        if n.starts_with(':') {
            continue;
        }
        let mark = match change {
            Change::Same => ' ',
            Change::Added => '+',
            Change::Changed => '~',
        };
        out.push_str(&format!("{mark} {n}: {}\n", text(&v)));
    }
    for (n, v) in removed {
        if !n.starts_with(':') {
            out.push_str(&format!("- {n}: {}\n", text(&v)));
        }
    }
    out.push('\n');
    if after.body.is_empty() {
        return;
    }
    if !is_text(&after.body) {
        out.push_str(&format!("<binary body, {} bytes>\n", after.body.len()));
    } else if after.body.len() > MAX_PRINTED_BODY {
        let mut cut = MAX_PRINTED_BODY;
        let s = std::str::from_utf8(&after.body).unwrap_or("");
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        out.push_str(&s[..cut]);
        out.push_str(&format!("\n<... {} more bytes>\n", after.body.len() - cut));
    } else {
        out.push_str(&text(&after.body));
        if !after.body.ends_with(b"\n") {
            out.push('\n');
        }
    }
    if before.body != after.body {
        out.push_str("(body replaced by the transformation)\n");
    }
}

/// A message as JSON: headers in order with their change, removed headers, the body as text
/// (or base64 when it is not text).
pub fn message_json(before: &MemoryMessage, after: &MemoryMessage) -> Value {
    let (lines, removed) = diff(before, after);
    let headers: Vec<Value> = lines
        .into_iter()
        .map(|(n, v, c)| {
            json!({"name": n, "value": text(&v), "change": match c {
                Change::Same => Value::Null,
                Change::Added => "added".into(),
                Change::Changed => "changed".into(),
            }})
        })
        .collect();
    let removed: Vec<Value> = removed
        .into_iter()
        .map(|(n, v)| json!({"name": n, "value": text(&v)}))
        .collect();
    let mut out = json!({"headers": headers, "removed_headers": removed,
                         "body_changed": before.body != after.body});
    if is_text(&after.body) {
        out["body"] = text(&after.body).into();
    } else {
        out["body_base64"] = base64::engine::general_purpose::STANDARD
            .encode(&after.body)
            .into();
    }
    out
}

/// The reason phrase Envoy's HTTP/1 codec sends for a status.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        413 => "Payload Too Large",
        418 => "I'm a teapot",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_files() {
        let m = parse_request(
            b"POST /v1/x HTTP/1.1\r\nHost: example\r\nContent-Type: text/plain\r\n\r\nhello",
            "f",
        )
        .unwrap();
        assert_eq!(m.header(":method").as_deref(), Some("POST"));
        assert_eq!(m.header(":authority").as_deref(), Some("example"));
        assert_eq!(m.header("content-type").as_deref(), Some("text/plain"));
        assert_eq!(m.header("content-length").as_deref(), Some("5"));
        assert_eq!(m.body, b"hello");
        let lf = parse_request(b"GET / HTTP/1.1\nx-a: 1\n\n", "f").unwrap();
        assert_eq!(lf.header("x-a").as_deref(), Some("1"));
        for bad in [
            &b"hello world"[..],
            b"GET /\r\n\r\n",
            b"\x00\x01\x02",
            b"GET / HTTP/1.1\nno colon\n\n",
        ] {
            assert!(parse_request(bad, "f").unwrap_err().starts_with("f: "));
        }
    }

    #[test]
    fn response_files() {
        let m = parse_response(b"HTTP/1.1 404 Not Found\r\nX-A: b\r\n\r\n", "r").unwrap();
        assert_eq!(m.header(":status").as_deref(), Some("404"));
        assert_eq!(m.header("content-length").as_deref(), Some("0"));
        assert!(parse_response(b"HTTP/1.1 999 No\r\n\r\n", "r").is_err());
    }

    #[test]
    fn changes_are_marked() {
        let before = MemoryMessage::new(&[("a", "1"), ("b", "2"), ("gone", "x")], "");
        let after = MemoryMessage::new(&[("a", "1"), ("b", "3"), ("c", "4")], "new");
        let mut out = String::new();
        print_message("HTTP/1.1 200 OK", &before, &after, &mut out);
        assert_eq!(
            out,
            "HTTP/1.1 200 OK\n  a: 1\n~ b: 3\n+ c: 4\n- gone: x\n\nnew\n(body replaced by the transformation)\n"
        );
        let binary = MemoryMessage::new(&[], "");
        let mut with_binary = binary.clone();
        with_binary.body = vec![0, 159, 146, 150];
        let mut out = String::new();
        print_message("X", &binary, &with_binary, &mut out);
        assert!(out.contains("<binary body, 4 bytes>"));
    }
}
