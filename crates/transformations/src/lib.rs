//! kgateway-compatible HTTP transformations, independent of Envoy.
//!
//! This crate parses the transformation JSON kgateway v2.3 and v2.4 send their `rustformation`
//! filter (TrafficPolicy `spec.transformation`), compiles every value once, and applies a compiled
//! [`Transformation`] to a request or a response through small traits ([`HeaderMap`],
//! [`Message`], [`StreamInfo`]). It has no FFI and no Envoy dependency; the glue crate
//! implements the traits over Envoy.
//!
//! ```
//! use transformations::{BodyMode, HeaderSnapshot, Transformation};
//! use transformations::memory::{MemoryMessage, MemoryStreamInfo};
//!
//! let t = Transformation::from_json(br#"{"response": {"set": [
//!     {"name": "x-method", "value": "{{ request_header(\":method\") }}"},
//!     {"name": "x-path", "value": "%REQ(:path)%"}]}}"#).unwrap();
//! let request = MemoryMessage::new(&[(":method", "GET"), (":path", "/a")], "");
//! let snapshot = t.capture_request_headers(&request);
//! let mut response = MemoryMessage::new(&[(":status", "200")], "");
//! let mut info = MemoryStreamInfo::default();
//! let warnings = t.apply_response(&mut response, &snapshot, BodyMode::HeadersOnly, &mut info).unwrap();
//! assert!(warnings.is_empty());
//! assert_eq!(response.header("x-method").as_deref(), Some("GET"));
//! assert_eq!(response.header("x-path").as_deref(), Some("/a"));
//! ```
//!
//! # Value syntax
//! Every header value, body value and dynamic-metadata value may hold:
//! - **MiniJinja** markup (`{{ }}`, `{% %}`, `{# #}`) with kgateway's functions: `header`,
//!   `request_header`, `body`, `context`, `env`, `get_cookie`, `get_cookie_i`, `substring`,
//!   `base64_encode`,
//!   `base64url_encode`, `base64_decode`, `base64url_decode`, `replace_with_random`,
//!   `replace_with_string`, `raw_string`, the [functions beyond
//!   kgateway](#functions-beyond-kgateway), plus MiniJinja's builtins. With `parseAs: AsJson`
//!   the keys of a JSON object body are top-level variables (shadowing functions of the same
//!   name) and `context()` is the whole JSON value.
//! - **Envoy command operators** in the text parts: `%REQ(h)%`, `%REQ(h?alt)%`,
//!   `%REQ(h):N%`, `%RESP(h)%` (same forms), `%PROTOCOL%`, `%START_TIME%`
//!   (`2026-11-26T13:46:26.123Z`), `%DOWNSTREAM_REMOTE_ADDRESS%`,
//!   `%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%`, and `%%` for a literal `%`. See
//!   [`operators`] for the exact rules (a `%` that does not start an operator, such as URL
//!   encoding, stays literal; an unknown `%UPPER_CASE%` operator rejects the config, as
//!   Envoy does).
//!
//! How they combine: at load time the value is split into Jinja markup and text; operators in
//! the text become calls of a hidden function, so a value is compiled once and never
//! re-parsed. Operators inside `{{ }}`/`{% %}` are not resolved (they are Jinja code there).
//! A value with neither is a literal and is never rendered.
//!
//! # Where operators read from
//! Header values are what the side saw when its application began (a `set` does not change
//! what a later `header()` or `%REQ()%` of the same side reads). In the response phase
//! `%REQ()%` and `request_header()` read the request headers as they were at the first
//! request callback, before our own request transformation. A missing header renders empty,
//! as in Envoy's header formatters (access logs would print `-`). Header values are read as
//! UTF-8, lossily; so is the body for `body()`.
//!
//! # kgateway releases
//! [`Options::release`] picks the release whose semantics a transformation follows
//! ([`KgatewayRelease`]): a repeated header reads as its last value (v2.3) or as every value
//! joined with `", "` (v2.4), in template functions and command operators alike. `get_cookie` and
//! `get_cookie_i` (v2.4's) are there under both.
//!
//! # Deliberate differences from kgateway
//! Measured against kgateway v2.3's and v2.4's own modules by the differential suite
//! (`tests/diff`, whose `differences.py` holds one case per difference):
//! - Command operators are resolved (kgateway passes `%REQ(...)%` through as text); an unknown
//!   `%UPPER_CASE%` operator, like a literal value with CR, LF or NUL, rejects the config.
//! - A rendered header value containing CR, LF or NUL is never emitted: `set` removes the
//!   header, `add` skips it, and a [`Warning`] of kind [`WarningKind::InvalidHeaderValue`] is
//!   returned.
//! - A `set`/`add` whose header name is not a token (pseudo-headers allowed) loads, as in
//!   kgateway, but is skipped, with a load-time warning ([`Transformation::warnings`]).
//! - A body template using JSON variables without a parsed JSON body gives the 400 reply
//!   (kgateway emptied the body), before anything is changed.
//! - `body()` and `context()` work in every value of a side whose body is buffered (kgateway
//!   only filled them when the body template called the same function).
//! - `substring` with offsets inside a UTF-8 character does not panic; the bytes are
//!   converted lossily. A panic of the template engine fails that one value, like any render
//!   error (kgateway's module takes Envoy down).
//! - Each value has a render budget ([`Limits`]); kgateway's is unbounded.
//! - `tojson` and `urlencode` are available (kgateway's engine is built without them).
//! - `get_cookie` and `get_cookie_i` are available under v2.3 semantics too; where one `Cookie`
//!   header spells a name two ways, `get_cookie_i` takes the first (v2.4's module: one at random).
//! - A side whose body nothing reads or replaces (no body value, not `AsJson`, no `body()` or
//!   `context()`) is not buffered: [`Side::needs_body`].
//!
//! Everything else matches kgateway's module, including how values print: this crate uses the
//! MiniJinja release kgateway v2.3 uses (2.12).
//!
//! # Functions beyond kgateway
//! Available in every value (`rustformation` and `my-smart-header` alike). kgateway v2.3's own
//! module does not know them: there a policy using them is answered with a 400 (an unknown
//! function is an undeclared variable), so the differential suite leaves them out.
//! - `regex_extract(value, pattern, group=0)`: the text of capture `group` (an index, or a
//!   name for `(?P<name>...)`) in the first match of `pattern` in `value`; empty when nothing
//!   matches, the group does not exist or did not take part, or the group is negative. The
//!   syntax is the `regex` crate's (linear time, no look-around or back-references). A pattern
//!   written as a string literal is compiled when the config loads and an invalid one rejects
//!   the config with the field path; a computed pattern is compiled on first use into a
//!   bounded cache and renders empty when invalid. Every pattern is limited in compiled size
//!   ([`pattern::REGEX_SIZE_LIMIT`]). A backslash is doubled in a Jinja string (`"\\d+"`)
//!   and doubled again in the policy JSON; `[0-9]` needs neither.
//!   See [`pattern`].
//! - `query_param(name)`: the first value of query parameter `name` of the request's `:path`
//!   (in both phases: the response phase reads the request path as the client sent it),
//!   percent-decoded with `+` as a space; empty when absent or bare (`?flag`).
//!   `set_query_param(path, name, value)` returns `path` with `name=value` (percent-encoded)
//!   replacing the first parameter of that name in place (later ones are dropped) or appended;
//!   `remove_query_param(path, name)` returns `path` without any parameter of that name (and
//!   without the `?` when nothing is left). Parameters they do not touch keep their order and
//!   encoding byte for byte. Use them in a `set` of `:path`. See [`query`].
//! - `json_set(document, pointer, value, raw=false)` / `json_delete(document, pointer)`: the JSON
//!   text `document` with the value at the JSON Pointer (RFC 6901) replaced, added or deleted,
//!   every other byte unchanged (key order, whitespace, numbers as written, escapes). `value` is
//!   inserted as a JSON string, or as written when `raw=true` (it must then be valid JSON). A
//!   missing parent leaves the document unchanged; an invalid document, pointer or raw value
//!   gives an empty result. One pass over the document, no tree: see [`json_edit`].
//! - `metadata(namespace, key, source="dynamic")`: a string value another filter or the config
//!   put in the stream's dynamic metadata (`source="dynamic"`), the route's, the cluster's or
//!   the upstream host's metadata (`"route"`, `"cluster"`, `"host"`); empty when absent or not a
//!   string. The arguments must be string literals: the pairs a config reads are decided when it
//!   loads (anything else rejects the config with the field path) and read once per side
//!   application through [`StreamInfo::metadata`]. Our own `dynamicMetadata` entries are set
//!   after the side's values render, so a value never sees the same side's writes.
//!
//! Bad arguments are answered as kgateway's functions answer them: an empty result, or, for
//! what can be known at load time, a rejected config; never a panic.
//!
//! # Limits
//! Each rendered value has a budget ([`Limits`]): MiniJinja fuel ([`DEFAULT_FUEL`]) and an
//! output cap ([`MAX_HEADER_VALUE_BYTES`] for headers and metadata, [`MAX_BODY_BYTES`] for
//! bodies). Exceeding it is a render error, handled like any render error: `set` removes
//! the header, `add` and dynamic metadata skip, and a body becomes empty
//! (`content-length: 0`, no `content-type`), as kgateway does for a body that fails to
//! render. JSON bodies nested 128 levels deep or more are a JSON parsing error (400): 127 levels
//! parse (serde_json's recursion limit).
//!
//! # `my-smart-header`
//! See [`smart_header`] for its configuration format.
//!
//! # Layout
//! Every file of the crate, from the bottom up. A file imports only files listed above it, never
//! one below (unit tests aside, which may use any layer to build their cases).
//!
//! Foundations, each standing alone unless it says otherwise:
//! - `error.rs`: config errors with their field path, the request-time errors, warnings.
//! - `release.rs`: which kgateway release's template semantics a config follows.
//! - `config.rs`: the transformation JSON as received, checked (error).
//! - `message.rs`: the traits the glue implements ([`HeaderMap`], [`Message`], [`StreamInfo`])
//!   and where `metadata()` reads ([`MetadataSource`]).
//! - `memory.rs`: those traits over plain memory, for tests, the CLI and benchmarks (message).
//! - `marker.rs`: the header proving a response went through the filter.
//! - `intern.rs`: compiled configs shared by their bytes.
//! - `operators.rs`: Envoy command operators (`%REQ(x)%`, ...), parsed and evaluated.
//! - `functions.rs`: kgateway's template functions that need no request.
//! - `pattern.rs`, `query.rs`, `json_edit.rs`: what `regex_extract`, the query functions and
//!   `json_set`/`json_delete` do, without the template engine.
//!
//! The template layer, [`template`] (`template/`; it lists its own files in their order):
//! compiling a value once and rendering it, on MiniJinja. It uses the foundations only.
//!
//! The transformation, over the template layer:
//! - `side.rs`: one compiled side ([`Side`]): its values and what they read.
//! - `prerender.rs`: response values rendered at the request (side).
//! - `apply.rs`: compiling a config into a [`Transformation`] and applying a side to a message
//!   (side, prerender).
//! - `plan.rs`: read-only views of what a transformation will do, for the glue (apply).
//! - `smart_header.rs`: the `my-smart-header` config, as a transformation (apply).
//! - `lib.rs`: this page and the re-exports; `tests/`: behaviour tests by area.

#![forbid(unsafe_code)]

pub mod apply;
pub mod config;
pub mod error;
pub mod functions;
pub mod intern;
pub mod json_edit;
pub mod marker;
pub mod memory;
pub mod message;
pub mod operators;
pub mod pattern;
pub mod plan;
pub mod prerender;
pub mod query;
pub mod release;
pub mod side;
pub mod smart_header;
pub mod template;

pub use template::extensions;

#[cfg(test)]
mod tests;

pub use apply::{
    BodyMode, HeaderMap, Message, MetadataSource, Side, StreamInfo, Transformation,
    is_upgrade_or_connect,
};
pub use config::{ParseAs, TransformationConfig};
pub use error::{ApplyError, Error, ErrorKind, TemplatePosition, Warning, WarningKind};
pub use plan::{SideAction, Target, ValueInfo, ValueKind};
pub use prerender::RequestCapture;
pub use release::KgatewayRelease;
pub use smart_header::{SmartHeaderConfig, smart_header_transformation};
pub use template::{
    DEFAULT_FUEL, DEFAULT_RENDER_BYTES, DEFAULT_RENDER_TIME, EnvLookup, HeaderNeeds,
    HeaderSnapshot, Limits, MAX_BODY_BYTES, MAX_HEADER_VALUE_BYTES, Options, RENDER_BYTES_ENV,
    RENDER_TIME_ENV,
};
