//! Behaviour tests, one (or more) per rule of the kgateway contract, by area; the helpers
//! they share are here.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use crate::memory::{MemoryMessage, MemoryStreamInfo};
use crate::*;

mod body;
mod budget;
mod functions;
mod headers;
mod json;
mod limits;
mod loading;
mod metadata;
mod operators;

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
