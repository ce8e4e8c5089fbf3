//! Compiling a [`TransformationConfig`] and applying it to one side of a stream, through
//! small traits the Envoy glue implements ([`HeaderMap`], [`Message`], [`StreamInfo`]).

use std::borrow::Cow;
use std::cell::Cell;

use minijinja::value::Value;

use crate::config::{ParseAs, SideConfig, TransformationConfig};
use crate::error::{ApplyError, Error, ErrorKind, Warning, WarningKind};
use crate::operators::format_start_time;
use crate::prerender::{Prerendered, RequestCapture};
use crate::release::KgatewayRelease;
use crate::side::{HeaderOp, MetadataOp, field_path};
use crate::template::{
    Compiled, Compiler, Engine, HeaderNeeds, HeaderSnapshot, Options, RenderData, RenderError,
    Usage, compile_value, parse_json_body,
};

pub use crate::message::{HeaderMap, Message, MetadataSource, StreamInfo};
pub use crate::side::Side;

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
        let compiled = compile_value(compiler, &body.value, &field, &mut usage)?;
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
            let value = compile_value(compiler, &nv.value, &field, &mut usage)?;
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
        let value = compile_value(compiler, &md.value.string_value, &field, &mut usage)?;
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

/// The name lowercased when it is an RFC 9110 token, optionally after one `:` (pseudo-headers
/// such as `:status` and `:path` are allowed).
fn header_name(name: &str) -> Option<String> {
    let rest = name.strip_prefix(':').unwrap_or(name);
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    (!rest.is_empty() && rest.bytes().all(token)).then(|| name.to_ascii_lowercase())
}
