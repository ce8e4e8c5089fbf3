//! The filter's handling of one request and its response, for whole messages: the same steps
//! the Envoy glue takes callback by callback (which side buffers, the request snapshot for the
//! response side, the 400 local reply with the marker, the marker on every handled response),
//! shared so that a tool showing "what the gateway does" runs the filter's own code.

use crate::apply::{BodyMode, Message, StreamInfo, Transformation};
use crate::error::{ApplyError, Warning};
use crate::marker::Marker;
use crate::plan::SideAction;
use crate::prerender::RequestCapture;

/// A reply the filter sends instead of forwarding (status 400 for an [`ApplyError`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply {
    pub status: u32,
    /// Headers of the reply (the marker, when one is configured).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Response-code details.
    pub details: &'static str,
    /// What went wrong, for logs.
    pub reason: String,
}

impl LocalReply {
    /// The reply the filter sends for `error`: its status, an empty body, its details, and the
    /// marker (Envoy does not run our response side on our own reply, so it travels here).
    pub fn for_error(error: &ApplyError, marker: Option<&Marker>) -> LocalReply {
        LocalReply {
            status: error.status(),
            headers: marker
                .map(|m| vec![(m.name.clone(), m.value.clone())])
                .unwrap_or_default(),
            body: Vec::new(),
            details: error.details(),
            reason: error.to_string(),
        }
    }
}

/// Adds the marker to a response the filter handled.
pub fn mark_response<M: Message + ?Sized>(response: &mut M, marker: Option<&Marker>) {
    if let Some(marker) = marker {
        response.set(&marker.name, marker.value.as_bytes());
    }
}

/// The body mode a side runs with, or `None` when it passes through.
pub fn body_mode(action: SideAction) -> Option<BodyMode> {
    match action {
        SideAction::PassThrough => None,
        SideAction::HeadersOnly => Some(BodyMode::HeadersOnly),
        SideAction::Buffered => Some(BodyMode::Buffered),
    }
}

/// The request half, done: what the filter decided and what the response half needs.
#[derive(Debug, Clone)]
pub struct RequestOutcome {
    pub action: SideAction,
    /// WebSocket upgrade or CONNECT with a side that would buffer: nothing buffers.
    pub headers_only_stream: bool,
    /// What the response side reads of the request as the client sent it.
    pub capture: RequestCapture,
    pub warnings: Vec<Warning>,
    /// `Some`: the request was answered here and not forwarded.
    pub reply: Option<LocalReply>,
}

/// The response half, done.
#[derive(Debug, Clone)]
pub struct ResponseOutcome {
    pub action: SideAction,
    pub warnings: Vec<Warning>,
    /// `Some`: the client gets this reply instead of the (transformed) response.
    pub reply: Option<LocalReply>,
}

/// Runs the request side on a whole request (headers and complete body), as the filter does.
pub fn run_request<M, S>(
    transformation: &Transformation,
    marker: Option<&Marker>,
    request: &mut M,
    info: &mut S,
) -> RequestOutcome
where
    M: Message + ?Sized,
    S: StreamInfo + ?Sized,
{
    let headers_only_stream = transformation.headers_only_stream(request);
    let capture = transformation.capture_request(request);
    let action = transformation.request().action(headers_only_stream);
    let mut outcome = RequestOutcome {
        action,
        headers_only_stream,
        capture,
        warnings: Vec::new(),
        reply: None,
    };
    if let Some(mode) = body_mode(action) {
        match transformation.apply_request(request, mode, info) {
            Ok(warnings) => outcome.warnings = warnings,
            Err(error) => outcome.reply = Some(LocalReply::for_error(&error, marker)),
        }
    }
    outcome
}

/// Runs the response side on a whole response, then adds the marker, as the filter does.
pub fn run_response<M, S>(
    transformation: &Transformation,
    marker: Option<&Marker>,
    request: &RequestOutcome,
    response: &mut M,
    info: &mut S,
) -> ResponseOutcome
where
    M: Message + ?Sized,
    S: StreamInfo + ?Sized,
{
    let action = transformation
        .response()
        .action(request.headers_only_stream);
    let mut outcome = ResponseOutcome {
        action,
        warnings: Vec::new(),
        reply: None,
    };
    if let Some(mode) = body_mode(action) {
        match transformation.apply_response_captured(response, &request.capture, mode, info) {
            Ok(warnings) => outcome.warnings = warnings,
            Err(error) => {
                outcome.reply = Some(LocalReply::for_error(&error, marker));
                return outcome;
            }
        }
    }
    mark_response(response, marker);
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::marker;
    use crate::memory::{MemoryMessage, MemoryStreamInfo};

    fn marker() -> Marker {
        marker::parse(marker::DEFAULT_MARKER).unwrap().unwrap()
    }

    #[test]
    fn the_labs_policy_end_to_end() {
        let t = Transformation::from_json(
            br#"{"response":{"set":[{"name":"X-Smart-Header","value":"method=%REQ(:METHOD)%&path=%REQ(:PATH)%"}]}}"#,
        )
        .unwrap();
        let m = marker();
        let mut request = MemoryMessage::new(
            &[(":method", "POST"), (":path", "/v1/chat/completions")],
            "{}",
        );
        let mut info = MemoryStreamInfo::default();
        let req = run_request(&t, Some(&m), &mut request, &mut info);
        assert_eq!(req.action, SideAction::PassThrough);
        assert!(req.reply.is_none());
        let mut response = MemoryMessage::new(&[(":status", "200")], "");
        let resp = run_response(&t, Some(&m), &req, &mut response, &mut info);
        assert_eq!(resp.action, SideAction::HeadersOnly);
        assert_eq!(
            response.header("x-smart-header").as_deref(),
            Some("method=POST&path=/v1/chat/completions")
        );
        assert_eq!(
            response.header("x-custom-transformed").as_deref(),
            Some("true")
        );
    }

    #[test]
    fn errors_become_the_400_reply_with_the_marker() {
        let t = Transformation::from_json(
            br#"{"request":{"set":[{"name":"x","value":"{{ model }}"}]}}"#,
        )
        .unwrap();
        let m = marker();
        let mut request = MemoryMessage::new(&[(":method", "GET"), (":path", "/")], "");
        let req = run_request(&t, Some(&m), &mut request, &mut MemoryStreamInfo::default());
        let reply = req.reply.unwrap();
        assert_eq!(reply.status, 400);
        assert_eq!(reply.details, ApplyError::UNDECLARED_DETAILS);
        assert_eq!(
            reply.headers,
            [("x-custom-transformed".into(), "true".into())]
        );
        assert!(reply.body.is_empty());
    }

    #[test]
    fn upgrades_never_buffer() {
        let t = Transformation::from_json(
            br#"{"request":{"body":{"value":"B {{ body() }}"},"set":[{"name":"x","value":"[{{ body() }}]"}]}}"#,
        )
        .unwrap();
        let mut request = MemoryMessage::new(
            &[(":method", "GET"), (":path", "/"), ("upgrade", "WebSocket")],
            "frame",
        );
        let req = run_request(&t, None, &mut request, &mut MemoryStreamInfo::default());
        assert!(req.headers_only_stream);
        assert_eq!(req.action, SideAction::HeadersOnly);
        assert_eq!(request.header("x").as_deref(), Some("[]"));
        assert_eq!(request.body_str(), "frame");
    }
}
