//! The request echo of `/get`, `/post`, ..., `/anything` and `/headers`, shaped like httpbun's.
//!
//! httpbun is written in Go, so its echo follows Go's rules: header names in canonical form
//! (`X-Smart-Header`), map keys (args, headers, form, and objects inside `json`) sorted, a key seen
//! several times given as an array of its values in order, a single one as a plain string.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::server::{Incoming, Reply};
use crate::urlencoded;

/// The request headers as httpbun shows them.
///
/// Go moves `Transfer-Encoding` out of the header map; httpbun puts it back as a list (always an
/// array). `X-Httpbun-*` headers are httpbun's own controls and are left out.
pub fn headers_object(req: &Incoming) -> Value {
    let mut grouped: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in &req.headers {
        let name = canonical_header_key(name);
        if name.starts_with("X-Httpbun-") {
            continue;
        }
        if name == "Transfer-Encoding" {
            let codings = grouped.entry(name).or_default();
            codings.extend(
                value
                    .split(',')
                    .map(|c| c.trim().to_ascii_lowercase())
                    .filter(|c| !c.is_empty()),
            );
            continue;
        }
        grouped.entry(name).or_default().push(value.clone());
    }
    let mut object = Map::new();
    for (name, values) in grouped {
        let value = if name == "Transfer-Encoding" {
            Value::from(values)
        } else {
            one_or_many(values)
        };
        object.insert(name, value);
    }
    Value::Object(object)
}

/// `{method, args, headers, origin, url, form, data, json, files}`, in that order.
pub fn info(req: &Incoming) -> Reply {
    let content_type = req
        .header_last("Content-Type")
        .filter(|v| !v.is_empty())
        .unwrap_or("text/plain");
    let media_type = match media_type(content_type) {
        Ok(media_type) => media_type,
        Err(err) => {
            return Reply::text(
                400,
                format!("Error parsing content type {content_type:?} {err}."),
            );
        }
    };

    let mut form = Map::new();
    let mut json = Value::Null;
    let data = match media_type.as_str() {
        "application/x-www-form-urlencoded" => {
            let body = String::from_utf8_lossy(&req.body);
            match urlencoded::parse(&body) {
                Ok(pairs) => {
                    form = grouped_object(pairs);
                    Value::from("")
                }
                // Like httpbun: an unparsable form is shown as raw data instead.
                Err(_) => Value::from(body.into_owned()),
            }
        }
        "application/json" => {
            if let Ok(parsed) = serde_json::from_slice::<Value>(&req.body) {
                json = sorted(parsed);
            }
            Value::from(String::from_utf8_lossy(&req.body).into_owned())
        }
        _ => match std::str::from_utf8(&req.body) {
            Ok(text) => Value::from(text),
            // Go encodes a byte slice that is not UTF-8 as base64.
            Err(_) => Value::from(base64(&req.body)),
        },
    };

    let args = grouped_object(urlencoded::parse_lenient(&req.query));
    let mut object = Map::new();
    object.insert("method".into(), Value::from(req.method.clone()));
    object.insert("args".into(), Value::Object(args));
    object.insert("headers".into(), headers_object(req));
    object.insert("origin".into(), Value::from(origin(req)));
    object.insert("url".into(), Value::from(full_url(req)));
    object.insert("form".into(), Value::Object(form));
    object.insert("data".into(), data);
    object.insert("json".into(), json);
    // Multipart uploads are not parsed; their body shows in `data`.
    object.insert("files".into(), Value::Object(Map::new()));
    Reply::json(200, &Value::Object(object))
}

/// Client address, unless httpbun's forwarding header names another.
fn origin(req: &Incoming) -> String {
    if let Some(forwarded) = req
        .header_last("X-Httpbun-Forwarded-For")
        .filter(|v| !v.is_empty())
    {
        return forwarded.to_string();
    }
    match req.peer {
        Some(std::net::IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => v6.to_string(),
        },
        Some(ip) => ip.to_string(),
        None => String::new(),
    }
}

/// `http://<Host><target>`, as httpbun rebuilds it from the request line and `Host`.
fn full_url(req: &Incoming) -> String {
    if !req.target.starts_with('/') {
        // Absolute-form target, already a full URL.
        return req.target.clone();
    }
    let scheme = req
        .header_last("X-Httpbun-Forwarded-Proto")
        .filter(|v| !v.is_empty())
        .unwrap_or("http");
    match req.header_last("Host").filter(|h| !h.is_empty()) {
        Some(host) => format!("{scheme}://{host}{}", req.target),
        None => format!("{scheme}:{}", req.target),
    }
}

fn grouped_object(pairs: Vec<(String, String)>) -> Map<String, Value> {
    let mut grouped: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (key, value) in pairs {
        grouped.entry(key).or_default().push(value);
    }
    grouped
        .into_iter()
        .map(|(key, values)| (key, one_or_many(values)))
        .collect()
}

fn one_or_many(mut values: Vec<String>) -> Value {
    if values.len() == 1 {
        Value::from(values.pop().unwrap_or_default())
    } else {
        Value::from(values)
    }
}

/// Go re-encodes parsed JSON objects with sorted keys; do the same so both echoes read alike.
pub fn sorted(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
        other => other,
    }
}

/// Go's `http.CanonicalHeaderKey`: `content-type` becomes `Content-Type`; a name with a byte
/// that is not a token character is left as it is.
pub fn canonical_header_key(name: &str) -> String {
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() || !name.bytes().all(token) {
        return name.to_string();
    }
    let mut upper = true;
    name.chars()
        .map(|c| {
            let out = if upper {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            };
            upper = c == '-';
            out
        })
        .collect()
}

/// The media type of a `Content-Type` value, lower-cased, checked like Go's
/// `mime.ParseMediaType` (parameters are not checked).
fn media_type(value: &str) -> Result<String, &'static str> {
    let token =
        |c: char| c.is_ascii() && !c.is_ascii_control() && !"()<>@,;:\\\"/[]?= ".contains(c);
    let media = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let kind_len = media.find(|c| !token(c)).unwrap_or(media.len());
    if kind_len == 0 {
        return Err("mime: no media type");
    }
    let rest = &media[kind_len..];
    if rest.is_empty() {
        return Ok(media);
    }
    let Some(sub) = rest.strip_prefix('/') else {
        return Err("mime: expected slash after first token");
    };
    let sub_len = sub.find(|c| !token(c)).unwrap_or(sub.len());
    if sub_len == 0 {
        return Err("mime: expected token after slash");
    }
    if sub_len != sub.len() {
        return Err("mime: unexpected content after media subtype");
    }
    Ok(media)
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | (u32::from(b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_keys() {
        assert_eq!(canonical_header_key("content-type"), "Content-Type");
        assert_eq!(canonical_header_key("x-SMART-header"), "X-Smart-Header");
        assert_eq!(canonical_header_key("HOST"), "Host");
        assert_eq!(canonical_header_key("bad header"), "bad header");
    }

    #[test]
    fn media_types() {
        assert_eq!(
            media_type("Application/JSON; charset=utf-8").unwrap(),
            "application/json"
        );
        assert_eq!(media_type("text").unwrap(), "text");
        assert!(media_type("text/").is_err());
        assert!(media_type("/json").is_err());
        assert!(media_type("a/b c").is_err());
    }

    #[test]
    fn base64_matches_go() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(&[0xff, 0xfe, 0x00, 0x80]), "//4AgA==");
    }

    #[test]
    fn nested_json_sorted() {
        let v: Value = serde_json::from_str(r#"{"b":1,"a":{"d":[{"z":1,"y":2}],"c":2}}"#).unwrap();
        assert_eq!(
            serde_json::to_string(&sorted(v)).unwrap(),
            r#"{"a":{"c":2,"d":[{"y":2,"z":1}]},"b":1}"#
        );
    }
}
