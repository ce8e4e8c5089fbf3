//! `POST /llm/chat/completions`: httpbun's mock of OpenAI's chat completions, plain and streamed.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

use crate::server::{Event, Incoming, Outcome, Reply};

const DEFAULT_CONTENT: &str = "This is a mock chat response from httpbun. I received your messages and I'm responding with this placeholder text.";

/// Upper bound on `n` (choices): httpbun has none, but the mock has no reason to build thousands.
const MAX_CHOICES: i64 = 128;

/// The fields httpbun reads from the request, with its defaults applied.
#[derive(Debug)]
struct ChatRequest {
    model: String,
    /// `(role, content)` of each message; content may be a string or a list of parts.
    messages: Vec<(String, Value)>,
    n: i64,
    stream: bool,
    content: Option<String>,
}

pub fn chat_completions(req: &Incoming) -> Outcome {
    if req.method != "POST" {
        let reply = Reply::json(405, &json!({ "error": "Method not allowed" }))
            .with_header("Allow", "POST");
        return Outcome::Reply(reply);
    }
    let request = match parse(&req.body) {
        Ok(request) => request,
        Err(reason) => {
            let body = json!({
                "error": {
                    "message": format!("Invalid JSON in request body: {reason}"),
                    "type": "invalid_request_error",
                }
            });
            return Outcome::Reply(Reply::json(400, &body));
        }
    };

    // httpbun's estimate: "role: content\n" for every message, in bytes.
    let prompt: String = request
        .messages
        .iter()
        .map(|(role, content)| format!("{role}: {}\n", text_of(content)))
        .collect();
    let prompt_tokens = estimate_tokens(&prompt);
    let content = request
        .content
        .clone()
        .unwrap_or_else(|| DEFAULT_CONTENT.to_string());
    let id = format!("chatcmpl-{}", random_hex(24));

    if request.stream {
        return Outcome::Stream(stream_events(&id, &request.model, &content));
    }

    let completion_tokens = estimate_tokens(&content);
    let choices: Vec<Value> = (0..request.n)
        .map(|index| {
            json!({
                "index": index,
                "message": { "role": "assistant", "content": content },
                "finish_reason": "stop",
            })
        })
        .collect();
    let body = json!({
        "id": id,
        "object": "chat.completion",
        "created": unix_now(),
        "model": request.model,
        "choices": choices,
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    });
    Outcome::Reply(Reply::json(200, &body))
}

/// A role delta, one event per word (each followed by the pause), an empty delta with
/// `finish_reason: "stop"`, then `[DONE]`.
fn stream_events(id: &str, model: &str, content: &str) -> Vec<Event> {
    let chunk = |delta: Value, finish_reason: Value| {
        json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": unix_now(),
            "model": model,
            "choices": [{ "index": 0, "delta": delta, "finish_reason": finish_reason }],
        })
        .to_string()
    };
    let mut events = vec![Event {
        data: chunk(json!({ "role": "assistant" }), Value::Null),
        pause_after: true,
    }];
    events.extend(words(content).into_iter().map(|word| Event {
        data: chunk(json!({ "content": word }), Value::Null),
        pause_after: true,
    }));
    events.push(Event {
        data: chunk(json!({}), json!("stop")),
        pause_after: false,
    });
    events.push(Event {
        data: "[DONE]".to_string(),
        pause_after: false,
    });
    events
}

/// httpbun's split, `^\s+|\S+\s*`: each word keeps the whitespace after it, so the deltas join
/// back into exactly the content.
fn words(text: &str) -> Vec<&str> {
    // Go's `\s` is ASCII only: tab, newline, form feed, carriage return, space.
    let space = |c: char| matches!(c, '\t' | '\n' | '\x0c' | '\r' | ' ');
    let mut out = Vec::new();
    let mut rest = text;
    let lead = rest.len() - rest.trim_start_matches(space).len();
    if lead > 0 {
        out.push(&rest[..lead]);
        rest = &rest[lead..];
    }
    while !rest.is_empty() {
        let word_end = rest.find(space).unwrap_or(rest.len());
        let after = &rest[word_end..];
        let end = word_end + (after.len() - after.trim_start_matches(space).len());
        out.push(&rest[..end]);
        rest = &rest[end..];
    }
    out
}

/// Roughly four bytes a token, as httpbun counts (`len` of a Go string is its UTF-8 bytes).
fn estimate_tokens(text: &str) -> usize {
    if text.is_empty() {
        0
    } else {
        text.len().div_ceil(4)
    }
}

/// httpbun's text of a message content: a string as is, a list of parts joined by spaces, a part
/// by its `content` or `text`, anything else as compact JSON.
fn text_of(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Array(items) => items
            .iter()
            .map(text_of)
            .filter(|t| !t.is_empty())
            .collect::<Vec<_>>()
            .join(" "),
        Value::Object(map) => {
            if let Some(content) = map.get("content") {
                let text = text_of(content);
                if !text.is_empty() {
                    return match map.get("role").and_then(Value::as_str) {
                        Some(role) if !role.is_empty() => format!("{role}: {text}"),
                        _ => text,
                    };
                }
            }
            if let Some(text) = map.get("text").and_then(Value::as_str) {
                return text.to_string();
            }
            crate::echo::sorted(value.clone()).to_string()
        }
        other => other.to_string(),
    }
}

/// Reads the body the way Go's `json.Unmarshal` fills httpbun's request struct: unknown fields
/// are ignored, `null` leaves a default, and a value of the wrong type is an error.
fn parse(body: &[u8]) -> Result<ChatRequest, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err("unexpected end of JSON input".to_string());
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let mut request = ChatRequest {
        model: String::new(),
        messages: Vec::new(),
        n: 0,
        stream: false,
        content: None,
    };
    let object = match value {
        Value::Null => Map::new(),
        Value::Object(object) => object,
        other => {
            return Err(format!(
                "json: cannot unmarshal {} into Go value of type llm.ChatCompletionRequest",
                kind(&other)
            ));
        }
    };
    let field = |name: &str| object.get(name).filter(|v| !v.is_null());
    let mismatch = |path: &str, value: &Value, want: &str| {
        format!(
            "json: cannot unmarshal {} into Go struct field ChatCompletionRequest.{path} of type {want}",
            kind(value)
        )
    };

    if let Some(model) = field("model") {
        request.model = model
            .as_str()
            .ok_or_else(|| mismatch("model", model, "string"))?
            .to_string();
    }
    if let Some(messages) = field("messages") {
        let items = messages
            .as_array()
            .ok_or_else(|| mismatch("messages", messages, "[]llm.ChatMessage"))?;
        for item in items {
            let (role, content) = match item {
                Value::Null => (String::new(), Value::Null),
                Value::Object(message) => {
                    let get = |name: &str| message.get(name).filter(|v| !v.is_null());
                    let role = match get("role") {
                        Some(role) => role
                            .as_str()
                            .ok_or_else(|| mismatch("messages.role", role, "string"))?
                            .to_string(),
                        None => String::new(),
                    };
                    if let Some(name) = get("name").filter(|n| !n.is_string()) {
                        return Err(mismatch("messages.name", name, "string"));
                    }
                    (role, get("content").cloned().unwrap_or(Value::Null))
                }
                other => return Err(mismatch("messages", other, "llm.ChatMessage")),
            };
            request.messages.push((role, content));
        }
    }
    for name in ["max_tokens", "n"] {
        if let Some(value) = field(name) {
            let int = value.as_i64().ok_or_else(|| mismatch(name, value, "int"))?;
            if name == "n" {
                request.n = int;
            }
        }
    }
    if let Some(temperature) = field("temperature").filter(|t| !t.is_number()) {
        return Err(mismatch("temperature", temperature, "float64"));
    }
    if let Some(stream) = field("stream") {
        request.stream = stream
            .as_bool()
            .ok_or_else(|| mismatch("stream", stream, "bool"))?;
    }
    if let Some(user) = field("user").filter(|u| !u.is_string()) {
        return Err(mismatch("user", user, "string"));
    }
    if let Some(httpbun) = field("httpbun") {
        let mock = httpbun
            .as_object()
            .ok_or_else(|| mismatch("httpbun", httpbun, "llm.HttpbunMock"))?;
        if let Some(content) = mock.get("content").filter(|c| !c.is_null()) {
            let content = content
                .as_str()
                .ok_or_else(|| mismatch("httpbun.content", content, "string"))?;
            if !content.is_empty() {
                request.content = Some(content.to_string());
            }
        }
    }

    if request.model.is_empty() {
        request.model = "gpt-4".to_string();
    }
    request.n = if request.n <= 0 {
        1
    } else {
        request.n.min(MAX_CHOICES)
    };
    Ok(request)
}

/// The JSON kind as Go names it in its unmarshal errors.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// httpbun's ids are the first characters of a random hex string.
fn random_hex(len: usize) -> String {
    (0..len)
        .map(|_| char::from_digit(fastrand::u32(..16), 16).unwrap_or('0'))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_join_back() {
        for text in [DEFAULT_CONTENT, "  lead and  trail  ", "one", "", "a\tb\nc"] {
            assert_eq!(words(text).concat(), text);
        }
        assert_eq!(words("  a b  c "), vec!["  ", "a ", "b  ", "c "]);
    }

    #[test]
    fn token_estimate() {
        assert_eq!(estimate_tokens(""), 0);
        assert_eq!(estimate_tokens("a"), 1);
        assert_eq!(estimate_tokens("abcd"), 1);
        assert_eq!(estimate_tokens("abcde"), 2);
        assert_eq!(
            estimate_tokens(DEFAULT_CONTENT),
            DEFAULT_CONTENT.len().div_ceil(4)
        );
    }

    #[test]
    fn parse_defaults_and_errors() {
        let r = parse(b"{}").unwrap();
        assert_eq!((r.model.as_str(), r.n, r.stream), ("gpt-4", 1, false));
        assert!(parse(b"null").is_ok());
        assert_eq!(parse(b"").unwrap_err(), "unexpected end of JSON input");
        assert!(parse(b"{").is_err());
        assert!(parse(b"[]").unwrap_err().contains("cannot unmarshal array"));
        assert!(
            parse(br#"{"model":1}"#)
                .unwrap_err()
                .contains("ChatCompletionRequest.model")
        );
        assert!(parse(br#"{"n":1.5}"#).is_err());
        assert!(parse(br#"{"stream":"yes"}"#).is_err());
        let r = parse(br#"{"model":"m","n":3,"stream":true,"httpbun":{"content":"hi"},"messages":[{"role":"user","content":"x"}]}"#)
            .unwrap();
        assert_eq!(
            (r.model.as_str(), r.n, r.stream, r.content.as_deref()),
            ("m", 3, true, Some("hi"))
        );
    }

    #[test]
    fn content_parts() {
        let parts = json!([{"type": "text", "text": "hello"}, {"type": "image_url", "image_url": {"url": "u"}}]);
        assert_eq!(
            text_of(&parts),
            r#"hello {"image_url":{"url":"u"},"type":"image_url"}"#
        );
        assert_eq!(text_of(&json!("plain")), "plain");
        assert_eq!(text_of(&json!(null)), "");
    }
}
