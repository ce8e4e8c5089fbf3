//! Read-only views of what a compiled [`Transformation`] will do: the facts the filter acts on
//! (which side buffers, which values are literals, operator lists or templates, what they read),
//! for tools that explain a policy. Nothing here is re-derived: each view reads the compiled
//! structures the filter applies.

use crate::apply::{HeaderMap, Side, Transformation, is_upgrade_or_connect};
use crate::config::ParseAs;
use crate::operators::Operator;
use crate::template::{Compiled, HeaderNeeds};

/// What the filter does with one side of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SideAction {
    /// Nothing to do: the side passes through untouched and unbuffered.
    PassThrough,
    /// The transformation runs in the headers callback; the body streams.
    HeadersOnly,
    /// Headers are held until the whole body is buffered, then the transformation runs.
    Buffered,
}

/// How a value was compiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    /// No value: `set` removes the header, `add` and metadata skip.
    Empty,
    /// Plain text, never rendered.
    Literal,
    /// Text and header/command operators, concatenated per request without the template engine
    /// (plain `{{ header("x") }}` / `{{ request_header("x") }}` calls compile to these too).
    Operators,
    /// A MiniJinja template, run per request.
    Template,
}

/// What a value is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    Body,
    Set(&'a str),
    Add(&'a str),
    Metadata { namespace: &'a str, key: &'a str },
}

/// One compiled value of a side, in the order the filter applies them.
#[derive(Debug, Clone)]
pub struct ValueInfo<'a> {
    /// Field path, e.g. `response.set[1].value`.
    pub field: &'a str,
    pub target: Target<'a>,
    pub kind: ValueKind,
    /// The text of a literal value.
    pub literal: Option<&'a str>,
    /// The operators of an [`ValueKind::Operators`] value, in order.
    pub operators: Vec<&'a Operator>,
    /// Top-level names a template looks up (functions included).
    pub variables: &'a [String],
    /// Names that are neither functions nor set in the template: only a JSON body
    /// (`parseAs: AsJson`) can provide them; without one the request is answered 400.
    pub json_variables: &'a [String],
}

/// What a side's values read at render time, as recorded when they were compiled.
#[derive(Debug, Clone, Copy)]
pub struct Reads<'a> {
    /// `header(name)` in templates.
    pub header_fn: &'a HeaderNeeds,
    /// `request_header(name)` in templates.
    pub request_header_fn: &'a HeaderNeeds,
    /// `%REQ(name)%` (and lowered `request_header`/request-side `header` calls).
    pub req_operator: &'a HeaderNeeds,
    /// `%RESP(name)%` (and lowered response-side `header` calls).
    pub resp_operator: &'a HeaderNeeds,
    /// Headers of the side's own message copied before rendering.
    pub own_headers: &'a HeaderNeeds,
    /// `body()` or `context()`.
    pub body: bool,
    /// Whether the whole JSON body is converted (otherwise only the named keys).
    pub whole_json: bool,
    pub protocol: bool,
    pub start_time: bool,
    pub remote_address: bool,
}

impl Side {
    /// The filter's action for this side; `headers_only_stream` is
    /// [`Transformation::headers_only_stream`] for the stream's request headers.
    pub fn action(&self, headers_only_stream: bool) -> SideAction {
        if !self.has_work() {
            SideAction::PassThrough
        } else if headers_only_stream || !self.needs_body() {
            SideAction::HeadersOnly
        } else {
            SideAction::Buffered
        }
    }

    /// Whether a body template replaces the body (ignored with `parseAs: None`).
    pub fn has_body_value(&self) -> bool {
        self.body.is_some()
    }

    /// Every value in the order the filter applies them: body, `set`, `add`, metadata.
    pub fn values(&self) -> Vec<ValueInfo<'_>> {
        let mut out = Vec::new();
        if let Some((value, field)) = &self.body {
            out.push(info(field, Target::Body, value));
        }
        for op in &self.set {
            out.push(info(&op.field, Target::Set(&op.name), &op.value));
        }
        for op in &self.add {
            out.push(info(&op.field, Target::Add(&op.name), &op.value));
        }
        for op in &self.metadata {
            out.push(info(
                &op.field,
                Target::Metadata {
                    namespace: &op.namespace,
                    key: &op.key,
                },
                &op.value,
            ));
        }
        out
    }

    /// Header names `remove` deletes (lowercased).
    pub fn removes(&self) -> &[String] {
        &self.remove
    }

    pub fn reads(&self) -> Reads<'_> {
        let u = &self.usage;
        Reads {
            header_fn: &u.header_fn,
            request_header_fn: &u.request_header_fn,
            req_operator: &u.req_op,
            resp_operator: &u.resp_op,
            own_headers: &self.own_needs,
            body: u.body,
            whole_json: u.whole_json,
            protocol: u.protocol,
            start_time: u.start_time,
            remote_address: u.remote_address,
        }
    }

    /// Whether the body is parsed as JSON when buffered.
    pub fn parses_json(&self) -> bool {
        self.parse_as == ParseAs::AsJson
    }
}

fn info<'a>(field: &'a str, target: Target<'a>, value: &'a Compiled) -> ValueInfo<'a> {
    let kind = match value {
        Compiled::Empty => ValueKind::Empty,
        Compiled::Literal(_) => ValueKind::Literal,
        Compiled::Ops { .. } => ValueKind::Operators,
        Compiled::Template { .. } => ValueKind::Template,
    };
    ValueInfo {
        field,
        target,
        kind,
        literal: value.literal(),
        operators: value.operators().collect(),
        variables: value.variables(),
        json_variables: value.undeclared(),
    }
}

impl Transformation {
    /// True when the stream is a WebSocket upgrade or CONNECT and some side would buffer:
    /// then no side buffers (header operations only). The filter decides this once, from the
    /// request headers.
    pub fn headers_only_stream<H: HeaderMap + ?Sized>(&self, request_headers: &H) -> bool {
        (self.request().needs_body() || self.response().needs_body())
            && is_upgrade_or_connect(request_headers)
    }
}
