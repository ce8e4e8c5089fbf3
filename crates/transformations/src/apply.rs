//! Compiling a [`TransformationConfig`] and applying it to one side of a stream, through
//! small traits the Envoy glue implements ([`HeaderMap`], [`Message`], [`StreamInfo`]).

use std::borrow::Cow;
use std::cell::Cell;
use std::net::SocketAddr;
use std::time::SystemTime;

use minijinja::value::Value;

use crate::config::{ParseAs, SideConfig, TransformationConfig};
use crate::error::{ApplyError, Error, ErrorKind, Warning, WarningKind};
use crate::operators::format_start_time;
use crate::prerender::{Prerendered, RequestCapture};
use crate::release::KgatewayRelease;
use crate::template::{
    Compiled, Compiler, Engine, HeaderNeeds, HeaderSnapshot, Options, RenderData, RenderError,
    SnapshotData, Usage, parse_json_body,
};

/// A header map. Names are matched case-insensitively.
pub trait HeaderMap {
    /// The last value of `name`, if any.
    fn get(&self, name: &str) -> Option<Cow<'_, [u8]>>;
    /// Lends the last value of `name` to `f`; false when absent. Snapshots read through this, so
    /// a map that can lend its value avoids a copy.
    fn with_last(&self, name: &str, f: &mut dyn FnMut(&[u8])) -> bool {
        match self.get(name) {
            Some(v) => {
                f(&v);
                true
            }
            None => false,
        }
    }
    /// [`HeaderMap::with_last`] as text, invalid UTF-8 replaced. A map that knows a cheaper check
    /// for the usual ASCII value overrides it.
    fn with_last_str(&self, name: &str, f: &mut dyn FnMut(&str)) -> bool {
        self.with_last(name, &mut |v| match std::str::from_utf8(v) {
            Ok(v) => f(v),
            Err(_) => f(&String::from_utf8_lossy(v)),
        })
    }
    /// Lends every value of `name` to `f`, in order; false when absent. A map that can look a
    /// name up directly overrides it.
    fn with_each(&self, name: &str, f: &mut dyn FnMut(&[u8])) -> bool {
        let mut found = false;
        self.for_each(&mut |n, v| {
            if n.eq_ignore_ascii_case(name.as_bytes()) {
                found = true;
                f(v);
            }
        });
        found
    }
    /// Every header, in order (duplicates included).
    fn for_each(&self, f: &mut dyn FnMut(&[u8], &[u8]));
    /// The names of [`HeaderMap::for_each`] whose length `n` is below 64 with bit `n` of
    /// `lengths` set; a map that can pass over the others without a call overrides it.
    fn for_each_name_of_lengths(&self, lengths: u64, f: &mut dyn FnMut(&[u8])) {
        self.for_each(&mut |name, _| {
            if name.len() < 64 && lengths & (1 << name.len()) != 0 {
                f(name);
            }
        });
    }
    /// Replaces every value of `name` by `value`.
    fn set(&mut self, name: &str, value: &[u8]);
    /// Appends a value.
    fn add(&mut self, name: &str, value: &[u8]);
    /// Whether adding a header that is absent costs less than setting it. Then a side reads the
    /// map's names once, and adds the headers it sets that are not there (Envoy's set searches
    /// the whole map to remove before it adds).
    fn adds_absent_cheaper(&self) -> bool {
        false
    }
    /// Removes every value of `name`.
    fn remove(&mut self, name: &str);
}

/// A request or a response: headers plus the whole (buffered) body.
pub trait Message: HeaderMap {
    fn body(&self) -> Cow<'_, [u8]>;
    /// Replaces the whole body.
    fn set_body(&mut self, body: &[u8]);
}

/// The stream around the message, for command operators, plus the dynamic-metadata sink.
/// Only what a transformation uses is asked for.
pub trait StreamInfo {
    /// `HTTP/1.0`, `HTTP/1.1`, `HTTP/2` or `HTTP/3`.
    fn protocol(&self) -> Option<Cow<'_, str>> {
        None
    }
    fn start_time(&self) -> Option<SystemTime> {
        None
    }
    fn downstream_remote_address(&self) -> Option<SocketAddr> {
        None
    }
    /// Sets string dynamic metadata `namespace/key`.
    fn set_dynamic_metadata(&mut self, namespace: &str, key: &str, value: &str);
    /// A string value of metadata `namespace/key` from `source` (what `metadata()` reads);
    /// `None` when absent or not a string. Asked only for the pairs the templates name, once
    /// per side application.
    fn metadata(&self, source: MetadataSource, namespace: &str, key: &str) -> Option<String> {
        let _ = (source, namespace, key);
        None
    }
}

/// Where `metadata(namespace, key, source)` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetadataSource {
    /// The stream's dynamic metadata (set by filters: `header_to_metadata`, `ext_authz`, ...).
    Dynamic,
    /// The route's `metadata`.
    Route,
    /// The upstream cluster's `metadata` (once the route picked a cluster).
    Cluster,
    /// The upstream host's `metadata` (response side: once a host was picked).
    Host,
}

impl MetadataSource {
    /// `dynamic`, `route`, `cluster` or `host`.
    pub fn from_name(name: &str) -> Option<MetadataSource> {
        Some(match name {
            "dynamic" => MetadataSource::Dynamic,
            "route" => MetadataSource::Route,
            "cluster" => MetadataSource::Cluster,
            "host" => MetadataSource::Host,
            _ => return None,
        })
    }
}

/// Whether the side's body is part of this application.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyMode {
    /// The whole body is buffered (possibly empty: headers came with end of stream). The body
    /// template runs, `body()` and `context()` see it.
    Buffered,
    /// Headers only (parseAs `None`, WebSocket upgrade, CONNECT, or a side that does not need
    /// the body): the body template is ignored, `body()` and `context()` render empty.
    HeadersOnly,
}

/// True for a WebSocket upgrade (`upgrade: websocket`, any case) or a CONNECT request: such
/// streams are never buffered.
pub fn is_upgrade_or_connect<H: HeaderMap + ?Sized>(request_headers: &H) -> bool {
    let is = |name: &str, want: &str| {
        request_headers
            .get(name)
            .is_some_and(|v| v.eq_ignore_ascii_case(want.as_bytes()))
    };
    is("upgrade", "websocket") || is(":method", "CONNECT")
}

impl HeaderSnapshot {
    /// Copies every value of the headers `needs` asks for (names lowercased; values are made
    /// UTF-8 when read), to be read as `release` reads a repeated header.
    pub fn capture<H: HeaderMap + ?Sized>(
        headers: &H,
        needs: &HeaderNeeds,
        release: KgatewayRelease,
    ) -> HeaderSnapshot {
        if needs.is_empty() {
            return HeaderSnapshot::default();
        }
        if needs.all() {
            let mut data = SnapshotData::with_capacity(release, 16, 1024);
            headers.for_each(&mut |n, v| data.push(n, v));
            return HeaderSnapshot::from_data(data);
        }
        let mut data = SnapshotData::new(release);
        for name in needs.names() {
            headers.with_each(name, &mut |v| data.push(name.as_bytes(), v));
        }
        HeaderSnapshot::from_data(data)
    }
}

#[derive(Debug)]
pub(crate) struct HeaderOp {
    pub(crate) name: String,
    pub(crate) value: Compiled,
    pub(crate) field: FieldPath,
    /// A literal value with no CR, LF or NUL: sent as it is, without the per-request check.
    pub(crate) checked_literal: bool,
}

#[derive(Debug)]
pub(crate) struct MetadataOp {
    pub(crate) namespace: String,
    pub(crate) key: String,
    pub(crate) value: Compiled,
    pub(crate) field: FieldPath,
}

/// One side (request or response), compiled.
#[derive(Debug, Default)]
pub struct Side {
    pub(crate) set: Vec<HeaderOp>,
    pub(crate) add: Vec<HeaderOp>,
    pub(crate) remove: Vec<String>,
    pub(crate) body: Option<(Compiled, String)>,
    pub(crate) parse_as: ParseAs,
    pub(crate) metadata: Vec<MetadataOp>,
    pub(crate) usage: Usage,
    /// Headers of this side's own message to snapshot before rendering.
    pub(crate) own_needs: HeaderNeeds,
    /// Bit i: the i-th `set` (of the first 64) may be sent as an add: it names a header no
    /// earlier `set` names (so when the header was absent before the side ran, it still is when
    /// that op's turn comes), shorter than 64 bytes (the length mask's range).
    pub(crate) addable_sets: u64,
    /// Bit i: the i-th `set` names a header the body step writes.
    pub(crate) body_header_sets: u64,
    /// Bit n: an addable `set` names a header n bytes long, so a map's other names are passed
    /// over without comparing.
    pub(crate) set_name_lengths: u64,
    /// [`Side::has_work`] and [`Side::needs_body`], worked out at load (asked at every hook).
    work: bool,
    body_needed: bool,
    /// [`Side::compute_prerenders`], worked out at load.
    pub(crate) prerenders: bool,
}

impl Side {
    /// False when there is nothing to do: the side passes through untouched, unbuffered.
    /// `parseAs: AsJson` alone is work: a body that is not JSON is answered with a 400.
    pub fn has_work(&self) -> bool {
        self.work
    }

    fn compute_has_work(&self) -> bool {
        !self.set.is_empty()
            || !self.add.is_empty()
            || !self.remove.is_empty()
            || !self.metadata.is_empty()
            || self.body.is_some()
            || self.parse_as == ParseAs::AsJson
    }

    /// Whether the glue should buffer this side's body (unless the stream is an upgrade or
    /// CONNECT). False with nothing to do or `parseAs: None`; otherwise true when something
    /// reads or replaces the body: a body template, `AsJson`, or `body()`/`context()`.
    pub fn needs_body(&self) -> bool {
        self.body_needed
    }

    fn compute_needs_body(&self) -> bool {
        self.work
            && self.parse_as != ParseAs::None
            && (self.body.is_some() || self.parse_as == ParseAs::AsJson || self.usage.body)
    }

    pub fn parse_as(&self) -> ParseAs {
        self.parse_as
    }

    /// Whether a successful application always leaves header `name` (any case) with exactly
    /// `value`: its last `set` of that name is that literal, and no `add` or `remove` names it.
    /// The glue then skips setting the same header again.
    pub fn always_sets(&self, name: &str, value: &str) -> bool {
        let names = |n: &str| n.eq_ignore_ascii_case(name);
        self.set
            .iter()
            .rev()
            .find(|op| names(&op.name))
            .is_some_and(|op| matches!(&op.value, Compiled::Literal(v) if **v == *value))
            && !self.add.iter().any(|op| names(&op.name))
            && !self.remove.iter().any(|n| names(n))
    }
}

/// A compiled transformation: immutable, shared by all streams (it is `Send + Sync`).
#[derive(Debug)]
pub struct Transformation {
    request: Side,
    response: Side,
    response_request_needs: HeaderNeeds,
    engine: Engine,
    warnings: Vec<String>,
    release: KgatewayRelease,
    /// Set once a render of this policy exceeded the budget: the first is logged as a warning,
    /// later ones at debug level (a flood of heavy requests must not flood the log).
    budget_reported: std::sync::atomic::AtomicBool,
}

impl Transformation {
    /// Parses and compiles the transformation JSON with default [`Options`].
    pub fn from_json(bytes: &[u8]) -> Result<Transformation, Error> {
        Transformation::from_json_with(bytes, &Options::default())
    }

    pub fn from_json_with(bytes: &[u8], options: &Options) -> Result<Transformation, Error> {
        Transformation::compile(&TransformationConfig::from_json(bytes)?, options)
    }

    /// Compiles a parsed configuration: every template is compiled here, once.
    pub fn compile(
        config: &TransformationConfig,
        options: &Options,
    ) -> Result<Transformation, Error> {
        let mut compiler = Compiler::new(options);
        let mut warnings = Vec::new();
        let request = compile_side(
            &mut compiler,
            config.request.as_ref(),
            "request",
            false,
            &mut warnings,
        )?;
        let response = compile_side(
            &mut compiler,
            config.response.as_ref(),
            "response",
            true,
            &mut warnings,
        )?;
        let mut response_request_needs = response.usage.request_header_fn.clone();
        response_request_needs.merge(&response.usage.req_op);
        response_request_needs.shrink();
        Ok(Transformation {
            request,
            response,
            response_request_needs,
            engine: compiler.finish(),
            warnings,
            release: options.release,
            budget_reported: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// True the first time it is called for this transformation (then false): whether a
    /// render budget warning is the policy's first, to log at warning level.
    pub fn first_budget_warning(&self) -> bool {
        !self
            .budget_reported
            .swap(true, std::sync::atomic::Ordering::Relaxed)
    }

    /// The render budget this transformation was compiled with.
    pub fn limits(&self) -> crate::Limits {
        self.engine.limits()
    }

    pub fn request(&self) -> &Side {
        &self.request
    }

    /// Whether a value of either side renders the stream's start time (`%START_TIME%`).
    pub fn reads_start_time(&self) -> bool {
        self.request.usage.start_time || self.response.usage.start_time
    }

    pub fn response(&self) -> &Side {
        &self.response
    }

    /// The kgateway release whose semantics this transformation follows.
    pub fn release(&self) -> KgatewayRelease {
        self.release
    }

    /// Problems found at load time that do not reject the config (kgateway accepts them),
    /// e.g. a `dynamicMetadata` entry with an empty key; log them once.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Request headers the response side reads (`request_header()`, `%REQ()%`). The glue
    /// snapshots them with [`Transformation::capture_request_headers`] at the first request
    /// callback, before the request transformation runs.
    pub fn response_request_headers(&self) -> &HeaderNeeds {
        &self.response_request_needs
    }

    /// The snapshot of request headers the response side will read.
    pub fn capture_request_headers<H: HeaderMap + ?Sized>(
        &self,
        request_headers: &H,
    ) -> HeaderSnapshot {
        HeaderSnapshot::capture(request_headers, &self.response_request_needs, self.release)
    }

    /// Applies the request side. `Err` means: send the 400 local reply it describes.
    /// Warnings are for the caller to log (and count).
    pub fn apply_request<M, S>(
        &self,
        request: &mut M,
        mode: BodyMode,
        info: &mut S,
    ) -> Result<Vec<Warning>, ApplyError>
    where
        M: Message + ?Sized,
        S: StreamInfo + ?Sized,
    {
        self.apply_side(&self.request, request, None, None, mode, info)
    }

    /// Applies the response side; `request_headers` is the snapshot taken at the first
    /// request callback.
    pub fn apply_response<M, S>(
        &self,
        response: &mut M,
        request_headers: &HeaderSnapshot,
        mode: BodyMode,
        info: &mut S,
    ) -> Result<Vec<Warning>, ApplyError>
    where
        M: Message + ?Sized,
        S: StreamInfo + ?Sized,
    {
        let capture = RequestCapture {
            snapshot: request_headers.clone(),
            prerendered: None,
        };
        self.apply_response_captured(response, &capture, mode, info)
    }

    /// What the response side keeps of the request, at the first request callback, before the
    /// request transformation runs: its values already rendered when they read only request
    /// headers and text ([`crate::prerender`]), else the snapshot of the headers they read.
    pub fn capture_request<H: HeaderMap + ?Sized>(&self, request_headers: &H) -> RequestCapture {
        let mut capture = RequestCapture::default();
        self.capture_request_into(request_headers, &mut capture);
        capture
    }

    /// [`Transformation::capture_request`] into `capture` where it lies (a stream's filter), so
    /// that its inline buffer is not moved.
    pub fn capture_request_into<H: HeaderMap + ?Sized>(
        &self,
        request_headers: &H,
        capture: &mut RequestCapture,
    ) {
        if self.response.prerenders {
            let cap = self.engine.limits().max_header_value_bytes;
            capture.snapshot = HeaderSnapshot::default();
            let prerendered = capture.prerendered.get_or_insert_with(Prerendered::default);
            self.response
                .prerender(request_headers, cap, self.release, prerendered);
        } else {
            capture.snapshot = self.capture_request_headers(request_headers);
            capture.prerendered = None;
        }
    }

    /// [`Transformation::apply_response`] with what [`Transformation::capture_request`] kept:
    /// the same result.
    pub fn apply_response_captured<M, S>(
        &self,
        response: &mut M,
        request: &RequestCapture,
        mode: BodyMode,
        info: &mut S,
    ) -> Result<Vec<Warning>, ApplyError>
    where
        M: Message + ?Sized,
        S: StreamInfo + ?Sized,
    {
        self.apply_side(
            &self.response,
            response,
            Some(&request.snapshot),
            request.prerendered.as_ref(),
            mode,
            info,
        )
    }

    fn apply_side<M, S>(
        &self,
        side: &Side,
        msg: &mut M,
        request_snapshot: Option<&HeaderSnapshot>,
        prerendered: Option<&Prerendered>,
        mode: BodyMode,
        info: &mut S,
    ) -> Result<Vec<Warning>, ApplyError>
    where
        M: Message + ?Sized,
        S: StreamInfo + ?Sized,
    {
        let mut warnings = Vec::new();
        if !side.has_work() {
            return Ok(warnings);
        }
        if let Some(prerendered) = prerendered {
            self.apply_prerendered(side, msg, prerendered, &mut warnings);
            return Ok(warnings);
        }
        let headers = HeaderSnapshot::capture(msg, &side.own_needs, self.release);
        let request_headers = request_snapshot.cloned().unwrap_or_else(|| headers.clone());

        let body_active = mode == BodyMode::Buffered && side.parse_as != ParseAs::None;
        let mut json = None;
        let mut body_value = Value::from("");
        if body_active {
            let body = msg.body();
            if side.parse_as == ParseAs::AsJson && !body.is_empty() {
                // serde_json refuses 128 levels of nesting or more: no stack overflow on hostile input.
                json = parse_json_body(&body, &side.usage.json_names, side.usage.whole_json)
                    .map_err(|e| ApplyError::JsonParse {
                        message: e.to_string(),
                    })?;
            }
            if side.usage.body {
                body_value = Value::from(String::from_utf8_lossy(&body).into_owned());
            }
        }
        // A value that reads JSON variables without a parsed JSON body is answered with a 400
        // when its turn comes, as kgateway does: what earlier entries did stays done (only
        // dynamic metadata outlives the reply). The body template comes first and is checked
        // before anything changes (kgateway would empty the body and go on).
        let undeclared = |field: &str, value: &Compiled| {
            if json.is_none() && !value.undeclared().is_empty() {
                Err(ApplyError::UndeclaredJsonVariables {
                    field: field.to_owned(),
                    names: value.undeclared().to_vec(),
                })
            } else {
                Ok(())
            }
        };
        if body_active && let Some((value, field)) = &side.body {
            undeclared(field, value)?;
        }

        let u = &side.usage;
        let data = RenderData {
            headers,
            request_headers,
            response_phase: request_snapshot.is_some(),
            protocol: if u.protocol {
                info.protocol().map(Cow::into_owned)
            } else {
                None
            },
            start_time: if u.start_time {
                info.start_time().map(format_start_time)
            } else {
                None
            },
            remote_address: if u.remote_address {
                info.downstream_remote_address()
            } else {
                None
            },
            body: body_value,
            context: json.clone().unwrap_or_default(),
            ops: self.engine.ops(),
            metadata: if u.metadata.is_empty() {
                Vec::new()
            } else {
                u.metadata
                    .iter()
                    .filter_map(|&i| {
                        let m = self.engine.metadata_keys().get(i)?;
                        Some((i, info.metadata(m.source, &m.namespace, &m.key)?))
                    })
                    .collect()
            },
            metadata_keys: self.engine.metadata_keys().clone(),
        };
        let scope = self.engine.scope(data, json.as_ref());
        let limits = self.engine.limits();
        let warn = |warnings: &mut Vec<Warning>, kind, field: &str, message: String| {
            warnings.push(Warning {
                kind,
                field: field.to_owned(),
                message,
            })
        };

        // One output buffer for every rendered value of this side, the thread's own.
        let mut buffer = RenderBuffer::lend();
        let out = &mut buffer.0;
        if let (true, Some((value, field))) = (body_active, &side.body) {
            let rendered = self
                .engine
                .render(value, &scope, limits.max_body_bytes, out)
                .unwrap_or_else(|e| {
                    // As kgateway: a body that fails to render is replaced by an empty body.
                    warn(&mut warnings, e.kind, field, e.message);
                    ""
                });
            msg.set_body(rendered.as_bytes());
            if rendered.is_empty() {
                msg.set("content-length", b"0");
                msg.remove("content-type");
            } else {
                msg.set("content-length", rendered.len().to_string().as_bytes());
            }
        }

        let absent = absent_set_headers(side, msg, body_active && side.body.is_some());
        for (i, op) in side.set.iter().enumerate() {
            undeclared(&op.field, &op.value)?;
            let rendered =
                self.engine
                    .render(&op.value, &scope, limits.max_header_value_bytes, out);
            set_header(
                msg,
                op,
                i,
                absent,
                rendered.map(str::as_bytes),
                &mut warnings,
            );
        }
        for op in &side.add {
            undeclared(&op.field, &op.value)?;
            let rendered =
                self.engine
                    .render(&op.value, &scope, limits.max_header_value_bytes, out);
            add_header(msg, op, rendered.map(str::as_bytes), &mut warnings);
        }
        for name in &side.remove {
            msg.remove(name);
        }
        for op in &side.metadata {
            undeclared(&op.field, &op.value)?;
            match self
                .engine
                .render(&op.value, &scope, limits.max_header_value_bytes, out)
            {
                Ok("") => {}
                Ok(v) => info.set_dynamic_metadata(&op.namespace, &op.key, v),
                Err(e) => warn(&mut warnings, e.kind, &op.field, e.message),
            }
        }
        Ok(warnings)
    }
}

impl Transformation {
    /// The header entries of a side whose values were rendered at the request (text and
    /// `%REQ()%` only: no body, no metadata, no JSON variables), with the same checks, in the same
    /// order, as a render now.
    fn apply_prerendered<M: Message + ?Sized>(
        &self,
        side: &Side,
        msg: &mut M,
        prerendered: &Prerendered,
        warnings: &mut Vec<Warning>,
    ) {
        let cap = self.engine.limits().max_header_value_bytes;
        // A literal was not copied at the request: it is sent as compiled, as a render would.
        fn value<'a>(
            prerendered: &'a Prerendered,
            i: usize,
            op: &'a HeaderOp,
            cap: usize,
        ) -> Result<&'a [u8], RenderError> {
            match &op.value {
                Compiled::Literal(text) => Ok(text.as_bytes()),
                _ => prerendered.value(i, cap),
            }
        }
        let absent = absent_set_headers(side, msg, false);
        for (i, op) in side.set.iter().enumerate() {
            set_header(msg, op, i, absent, value(prerendered, i, op, cap), warnings);
        }
        let sets = side.set.len();
        for (i, op) in side.add.iter().enumerate() {
            add_header(msg, op, value(prerendered, sets + i, op, cap), warnings);
        }
        for name in &side.remove {
            msg.remove(name);
        }
    }
}

/// The `i`-th `set` entry with its rendered value: an empty value removes the header, one that
/// holds CR, LF or NUL or failed to render removes it and warns; a header known absent is
/// added.
fn set_header<M: HeaderMap + ?Sized>(
    msg: &mut M,
    op: &HeaderOp,
    i: usize,
    absent: u64,
    rendered: Result<&[u8], RenderError>,
    warnings: &mut Vec<Warning>,
) {
    match rendered {
        Ok(v) if op.name == ":status" && !is_valid_status(v) => {
            warnings.push(invalid_status_warning(op));
        }
        Ok(b"") => msg.remove(&op.name),
        Ok(v) if !op.checked_literal && is_invalid_header_value(v) => {
            msg.remove(&op.name);
            warnings.push(invalid_value_warning(op));
        }
        Ok(v) if i < 64 && absent & (1 << i) != 0 => msg.add(&op.name, v),
        Ok(v) => msg.set(&op.name, v),
        Err(e) => {
            msg.remove(&op.name);
            warnings.push(render_warning(op, e));
        }
    }
}

/// An `add` entry with its rendered value: nothing is added when it is empty, holds CR, LF or
/// NUL (warned) or failed to render (warned).
fn add_header<M: HeaderMap + ?Sized>(
    msg: &mut M,
    op: &HeaderOp,
    rendered: Result<&[u8], RenderError>,
    warnings: &mut Vec<Warning>,
) {
    match rendered {
        Ok(v) if op.name == ":status" && !is_valid_status(v) => {
            warnings.push(invalid_status_warning(op));
        }
        Ok(b"") => {}
        Ok(v) if !op.checked_literal && is_invalid_header_value(v) => {
            warnings.push(invalid_value_warning(op));
        }
        Ok(v) => msg.add(&op.name, v),
        Err(e) => warnings.push(render_warning(op, e)),
    }
}

fn invalid_value_warning(op: &HeaderOp) -> Warning {
    Warning {
        kind: WarningKind::InvalidHeaderValue,
        field: op.field.to_string(),
        message: invalid_value_message(),
    }
}

/// A `:status` Envoy can send: three digits, 100 to 599.
pub(crate) fn is_valid_status(v: &[u8]) -> bool {
    matches!(v, [b'1'..=b'5', b'0'..=b'9', b'0'..=b'9'])
}

fn invalid_status_warning(op: &HeaderOp) -> Warning {
    Warning {
        kind: WarningKind::InvalidHeaderValue,
        field: op.field.to_string(),
        message: "rendered :status is not three digits from 100 to 599; status left as it was"
            .to_owned(),
    }
}

fn render_warning(op: &HeaderOp, e: RenderError) -> Warning {
    Warning {
        kind: e.kind,
        field: op.field.to_string(),
        message: e.message,
    }
}

thread_local! {
    /// This thread's render buffer, lent to one side application at a time.
    static RENDER_BUFFER: Cell<String> = const { Cell::new(String::new()) };
}

/// A render buffer kept past this size goes back to the allocator (a large body grew it).
const KEEP_RENDER_BUFFER: usize = 16 * 1024;

/// The thread's render buffer while a side renders, so that once the thread has rendered values
/// as long, a side's renders allocate nothing.
struct RenderBuffer(String);

impl RenderBuffer {
    fn lend() -> RenderBuffer {
        RenderBuffer(RENDER_BUFFER.try_with(Cell::take).unwrap_or_default())
    }
}

impl Drop for RenderBuffer {
    fn drop(&mut self) {
        if self.0.capacity() <= KEEP_RENDER_BUFFER {
            let buffer = std::mem::take(&mut self.0);
            // During the thread's teardown the buffer is simply freed.
            let _ = RENDER_BUFFER.try_with(|kept| kept.set(buffer));
        }
    }
}

/// Headers the body step writes (`content-length`) or removes (`content-type`).
const BODY_HEADERS: [&str; 2] = ["content-length", "content-type"];

/// Bit i set: the header of the side's i-th `set` is absent from `msg` when that op's turn comes,
/// so adding it is the same as setting it. None set when the map sets as cheaply as it adds.
fn absent_set_headers<M: HeaderMap + ?Sized>(side: &Side, msg: &M, body_written: bool) -> u64 {
    if !msg.adds_absent_cheaper() {
        return 0;
    }
    let mut absent = side.addable_sets;
    if body_written {
        absent &= !side.body_header_sets;
    }
    // One read of the whole map. Asking Envoy for each name costs more: a lookup in a map of a
    // few headers builds Envoy's lazy name index, which every later add then updates.
    if absent != 0 {
        msg.for_each_name_of_lengths(side.set_name_lengths, &mut |name| {
            let mut candidates = absent;
            while candidates != 0 {
                let i = candidates.trailing_zeros() as usize;
                candidates &= candidates - 1;
                if name.eq_ignore_ascii_case(side.set[i].name.as_bytes()) {
                    absent &= !(1 << i);
                }
            }
        });
    }
    absent
}

pub(crate) fn is_invalid_header_value(v: &[u8]) -> bool {
    memchr::memchr3(b'\r', b'\n', b'\0', v).is_some()
}

fn invalid_value_message() -> String {
    "rendered header value contains CR, LF or NUL; header not emitted".to_owned()
}

fn compile_side(
    compiler: &mut Compiler,
    config: Option<&SideConfig>,
    side_name: &str,
    response_phase: bool,
    warnings: &mut Vec<String>,
) -> Result<Side, Error> {
    let Some(config) = config else {
        return Ok(Side::default());
    };
    let mut side = Side {
        parse_as: config.body.as_ref().map(|b| b.parse_as).unwrap_or_default(),
        ..Side::default()
    };
    let mut usage = Usage::default();
    compiler.lower_header_calls = (side.parse_as != ParseAs::AsJson).then_some(response_phase);

    // Ignored entirely with parseAs None, as kgateway (it does not even compile it).
    if let Some(body) = &config.body
        && body.parse_as != ParseAs::None
        && !body.value.is_empty()
    {
        let field = format!("{side_name}.body.value");
        let compiled = crate::value_cache::compile(compiler, &body.value, &field, &mut usage)?;
        side.body = Some((compiled, field));
    }
    for (list, kind, out) in [
        (&config.set, "set", &mut side.set),
        (&config.add, "add", &mut side.add),
    ] {
        for (i, nv) in list.iter().enumerate() {
            let Some(name) = header_name(&nv.name) else {
                // kgateway loads it and Envoy then answers 503 or writes a malformed header
                // line; we load it too (refusing would freeze the whole route update) but never
                // send it.
                warnings.push(format!(
                    "{side_name}.{kind}[{i}] ignored: {:?} is not a valid header name",
                    nv.name
                ));
                continue;
            };
            let field = field_path(side_name, kind, i, "value");
            let value = crate::value_cache::compile(compiler, &nv.value, &field, &mut usage)?;
            if value
                .literal()
                .is_some_and(|v| is_invalid_header_value(v.as_bytes()))
            {
                return Err(Error::new(
                    ErrorKind::InvalidValue,
                    "header value contains CR, LF or NUL",
                )
                .at(&*field));
            }
            let checked_literal =
                matches!(&value, Compiled::Literal(v) if !is_invalid_header_value(v.as_bytes()));
            out.push(HeaderOp {
                name,
                value,
                field,
                checked_literal,
            });
        }
    }
    for (i, op) in side.set.iter().enumerate().take(64) {
        if op.name.len() < 64 && !side.set[..i].iter().any(|earlier| earlier.name == op.name) {
            side.addable_sets |= 1 << i;
            side.set_name_lengths |= 1 << op.name.len();
        }
        if BODY_HEADERS.contains(&op.name.as_str()) {
            side.body_header_sets |= 1 << i;
        }
    }
    // No header can carry an invalid name, so removing one is harmless: kept as given.
    side.remove = config
        .remove
        .iter()
        .map(|name| name.to_ascii_lowercase())
        .collect();
    for (i, md) in config.dynamic_metadata.iter().enumerate() {
        let mut missing = Vec::new();
        for (what, v) in [
            ("namespace", &md.namespace),
            ("key", &md.key),
            ("value", &md.value.string_value),
        ] {
            if v.is_empty() {
                missing.push(what);
            }
        }
        if !missing.is_empty() {
            // kgateway accepts such an entry and skips it; so do we, once, at load time.
            warnings.push(format!(
                "{side_name}.dynamicMetadata[{i}] ignored: empty {}",
                missing.join(", ")
            ));
            continue;
        }
        let field = field_path(side_name, "dynamicMetadata", i, "value.stringValue");
        let value =
            crate::value_cache::compile(compiler, &md.value.string_value, &field, &mut usage)?;
        // The last entry for a namespace and key replaces the earlier ones, which never run:
        // it alone decides, even when it renders empty or fails (as kgateway, which keeps its
        // entries by namespace and key).
        side.metadata
            .retain(|op| op.namespace != md.namespace || op.key != md.key);
        side.metadata.push(MetadataOp {
            namespace: md.namespace.clone(),
            key: md.key.clone(),
            value,
            field,
        });
    }

    let mut own = usage.header_fn.clone();
    if response_phase {
        own.merge(&usage.resp_op);
    } else {
        // In the request phase header(), request_header() and %REQ% all read the request.
        own.merge(&usage.request_header_fn);
        own.merge(&usage.req_op);
    }
    own.shrink();
    side.own_needs = own;
    usage.shrink(side.parse_as == ParseAs::AsJson);
    side.usage = usage;
    for ops in [&mut side.set, &mut side.add] {
        ops.shrink_to_fit();
    }
    side.remove.shrink_to_fit();
    side.metadata.shrink_to_fit();
    side.work = side.compute_has_work();
    side.body_needed = side.compute_needs_body();
    side.prerenders = side.compute_prerenders();
    Ok(side)
}

/// The path that names a value in errors and warnings (and its template), e.g.
/// `request.set[0].value`. The paths of the first entries of each list are shared by every
/// config in the process, rather than kept once per route.
pub(crate) type FieldPath = std::sync::Arc<str>;

/// Lists of up to this many entries have their paths shared (a bounded table: 2 sides × 3
/// lists × this many).
const SHARED_FIELD_PATHS: usize = 64;

/// [`field_path_text`], shared for the first [`SHARED_FIELD_PATHS`] entries of a list.
fn field_path(side: &str, list: &str, index: usize, leaf: &str) -> FieldPath {
    use std::collections::HashSet;
    use std::sync::Mutex;
    static SHARED: Mutex<Option<HashSet<FieldPath>>> = Mutex::new(None);
    let text = field_path_text(side, list, index, leaf);
    if index >= SHARED_FIELD_PATHS {
        return text.into();
    }
    let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    let shared = shared.get_or_insert_with(HashSet::new);
    if let Some(path) = shared.get(text.as_str()) {
        return path.clone();
    }
    let path: FieldPath = text.into();
    shared.insert(path.clone());
    path
}

/// `side.list[index].leaf`, built by hand: `format!` cost a tenth of compiling a lowered value,
/// on every value of every route.
fn field_path_text(side: &str, list: &str, index: usize, leaf: &str) -> String {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut rest = index;
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    let digits = std::str::from_utf8(&digits[at..]).expect("ASCII digits");
    let mut path = String::with_capacity(side.len() + list.len() + digits.len() + leaf.len() + 4);
    for part in [side, ".", list, "[", digits, "].", leaf] {
        path.push_str(part);
    }
    path
}

/// The name lowercased when it is an RFC 9110 token, optionally after one `:` (pseudo-headers
/// such as `:status` and `:path` are allowed).
fn header_name(name: &str) -> Option<String> {
    let rest = name.strip_prefix(':').unwrap_or(name);
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    (!rest.is_empty() && rest.bytes().all(token)).then(|| name.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::field_path;
    use std::sync::Arc;

    #[test]
    fn field_paths_name_the_list_index_and_leaf() {
        assert_eq!(
            &*field_path("request", "set", 0, "value"),
            "request.set[0].value"
        );
        assert_eq!(
            &*field_path("response", "dynamicMetadata", 1207, "value.stringValue"),
            "response.dynamicMetadata[1207].value.stringValue"
        );
        assert_eq!(
            *field_path("request", "add", usize::MAX, "value"),
            format!("request.add[{}].value", usize::MAX)
        );
    }

    #[test]
    fn the_paths_of_first_entries_are_shared_and_later_ones_are_not() {
        let shared = |i| {
            Arc::ptr_eq(
                &field_path("response", "add", i, "value"),
                &field_path("response", "add", i, "value"),
            )
        };
        assert!(shared(0));
        assert!(shared(63));
        assert!(!shared(64));
    }
}
