//! Response values rendered at the request.
//!
//! A response value made only of text and `%REQ()%` operators reads nothing but the request
//! headers as they were at the first request callback, which is exactly what the request
//! snapshot keeps. Rendering such values when the snapshot would be taken gives the same text,
//! and the response side then neither keeps a snapshot nor builds render data: it sends what was
//! rendered. Checks that depend on the value (empty, CR/LF/NUL, the size cap) still happen when
//! the response side applies, in the same order, with the same warnings.

use std::borrow::Cow;
use std::net::SocketAddr;

use smallvec::SmallVec;

use crate::apply::{HeaderMap, Side};
use crate::operators::{OperatorKind, OperatorSource, Segment};
use crate::template::{Compiled, HeaderSnapshot, RenderError, too_large};

/// Bytes of rendered text kept inside the stream's filter before it needs an allocation of its
/// own: the lab's `X-Smart-Header` with a usual path fits.
const INLINE_TEXT: usize = 128;

/// An end marking a value whose render passed the size cap.
const TOO_LARGE: u32 = u32::MAX;

/// A side's `set` then `add` values, rendered back to back.
#[derive(Debug, Default)]
pub struct Prerendered {
    text: SmallVec<[u8; INLINE_TEXT]>,
    /// Per value, where it ends in `text` ([`TOO_LARGE`] when its render passed the cap).
    ends: SmallVec<[u32; 4]>,
}

impl Prerendered {
    /// The `index`-th value (`set` entries first, then `add` entries).
    pub(crate) fn value(&self, index: usize, cap: usize) -> Result<&[u8], RenderError> {
        let end = self.ends.get(index).copied().unwrap_or(0);
        if end == TOO_LARGE {
            return Err(too_large(cap));
        }
        let start = self.ends[..index]
            .iter()
            .rev()
            .find(|&&e| e != TOO_LARGE)
            .copied()
            .unwrap_or(0);
        Ok(self
            .text
            .get(start as usize..end as usize)
            .unwrap_or_default())
    }
}

/// What the response side keeps of the request, taken at the first request callback (before
/// the request transformation and the router change the request): the request headers its
/// values read, or, when [`Side::prerenders`], its values already rendered.
#[derive(Debug, Default)]
pub struct RequestCapture {
    pub(crate) snapshot: HeaderSnapshot,
    pub(crate) prerendered: Option<Prerendered>,
}

impl Side {
    /// Whether every value of this side is text and `%REQ()%` operators and the side does
    /// nothing else that renders (no body, no dynamic metadata, no `parseAs: AsJson`), with at
    /// least one operator: its values can then be rendered from the request alone.
    pub(crate) fn compute_prerenders(&self) -> bool {
        let ops_of = |value: &Compiled| match value {
            Compiled::Empty | Compiled::Literal(_) => Some(0),
            Compiled::Ops { segments, .. } => segments
                .iter()
                .all(|s| match s {
                    Segment::Literal(_) => true,
                    Segment::Op(op) => matches!(op.kind, OperatorKind::Req { .. }),
                })
                .then_some(segments.len()),
            Compiled::Template { .. } => None,
        };
        let values = self.set.iter().chain(&self.add).map(|op| ops_of(&op.value));
        let mut any_op = false;
        for count in values {
            match count {
                None => return false,
                Some(n) => any_op |= n > 0,
            }
        }
        any_op
            && self.body.is_none()
            && self.metadata.is_empty()
            && self.parse_as != crate::config::ParseAs::AsJson
    }

    /// Renders the side's `set` then `add` values from the request headers.
    pub(crate) fn prerender<H: HeaderMap + ?Sized>(
        &self,
        request: &H,
        cap: usize,
        out: &mut String,
    ) -> Prerendered {
        let source = RequestHeaders(request);
        let mut rendered = Prerendered::default();
        for op in self.set.iter().chain(&self.add) {
            let fits = match &op.value {
                Compiled::Empty => true,
                Compiled::Literal(text) => {
                    rendered.text.extend_from_slice(text.as_bytes());
                    true
                }
                Compiled::Ops { segments, .. } => {
                    out.clear();
                    let mut fits = true;
                    for segment in segments.iter() {
                        match segment {
                            Segment::Literal(text) => out.push_str(text),
                            Segment::Op(operator) => operator.eval(&source, out),
                        }
                        if out.len() > cap {
                            fits = false;
                            break;
                        }
                    }
                    if fits {
                        rendered.text.extend_from_slice(out.as_bytes());
                    }
                    fits
                }
                // Not prerendered (`compute_prerenders`); nothing reaches here.
                Compiled::Template { .. } => true,
            };
            let end = u32::try_from(rendered.text.len()).unwrap_or(TOO_LARGE);
            rendered.ends.push(if fits { end } else { TOO_LARGE });
        }
        rendered
    }
}

/// The request's own headers as an operator source, read where they are (`%REQ()%` only).
struct RequestHeaders<'a, H: ?Sized>(&'a H);

impl<H: HeaderMap + ?Sized> OperatorSource for RequestHeaders<'_, H> {
    fn request_header(&self, name: &str) -> Option<Cow<'_, str>> {
        let mut value = None;
        self.0.with_last(name, &mut |v| {
            value = Some(String::from_utf8_lossy(v).into_owned());
        });
        value.map(Cow::Owned)
    }

    fn write_request_header(&self, name: &str, out: &mut String) -> bool {
        // As a snapshot reads it: the last value, invalid UTF-8 replaced.
        self.0
            .with_last(name, &mut |v| match std::str::from_utf8(v) {
                Ok(v) => out.push_str(v),
                Err(_) => out.push_str(&String::from_utf8_lossy(v)),
            })
    }

    fn response_header(&self, _: &str) -> Option<Cow<'_, str>> {
        None
    }
    fn protocol(&self) -> Option<&str> {
        None
    }
    fn start_time(&self) -> Option<&str> {
        None
    }
    fn downstream_remote_address(&self) -> Option<SocketAddr> {
        None
    }
}

#[cfg(test)]
mod tests {
    use crate::memory::{MemoryMessage, MemoryStreamInfo};
    use crate::*;

    fn compile_with_cap(json: &str, cap: usize) -> Transformation {
        let mut options = Options::default();
        options.limits.max_header_value_bytes = cap;
        Transformation::from_json_with(json.as_bytes(), &options).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The response as the filter sends it with each kind of capture: prerendered values, and
    /// the snapshot rendered at the response.
    fn both_ways(
        t: &Transformation,
        request: &MemoryMessage,
        response: &MemoryMessage,
    ) -> [(MemoryMessage, Vec<Warning>); 2] {
        let captured = t.capture_request(request);
        let mut prerendered = response.clone();
        let warnings = t
            .apply_response_captured(
                &mut prerendered,
                &captured,
                BodyMode::HeadersOnly,
                &mut MemoryStreamInfo::default(),
            )
            .unwrap();
        let snapshot = t.capture_request_headers(request);
        let mut rendered = response.clone();
        let rendered_warnings = t
            .apply_response(
                &mut rendered,
                &snapshot,
                BodyMode::HeadersOnly,
                &mut MemoryStreamInfo::default(),
            )
            .unwrap();
        [(prerendered, warnings), (rendered, rendered_warnings)]
    }

    #[test]
    fn a_response_of_text_and_request_operators_is_rendered_at_the_request() {
        let prerendered = |json: &str| compile_with_cap(json, 64).response().prerenders;
        let ops = r#"{"response":{"set":[{"name":"x-a","value":"m=%REQ(:METHOD)%"}]}}"#;
        assert!(prerendered(ops));
        let jinja =
            r#"{"response":{"set":[{"name":"x-a","value":"{{ request_header(\":path\") }}"}]}}"#;
        assert!(
            prerendered(jinja),
            "the Jinja form compiles to the same operators"
        );
        for not in [
            r#"{"response":{"set":[{"name":"x-a","value":"literal only"}]}}"#,
            r#"{"response":{"set":[{"name":"x-a","value":"%RESP(:status)%"}]}}"#,
            r#"{"response":{"set":[{"name":"x-a","value":"%PROTOCOL% %REQ(:path)%"}]}}"#,
            r#"{"response":{"set":[{"name":"x-a","value":"{{ now() }} %REQ(:path)%"}]}}"#,
            r#"{"response":{"set":[{"name":"x-a","value":"%REQ(:path)%"}],"body":{"value":"b"}}}"#,
            r#"{"response":{"set":[{"name":"x-a","value":"%REQ(:path)%"}],
                "dynamicMetadata":[{"namespace":"n","key":"k","value":{"stringValue":"v"}}]}}"#,
        ] {
            assert!(!prerendered(not), "{not}");
        }
    }

    #[test]
    fn a_prerendered_response_is_the_one_rendered_at_the_response() {
        // Every outcome of a value: present, missing with and without a fallback, truncated,
        // repeated (the last wins), invalid UTF-8, empty (removes), CR/LF (dropped and warned),
        // past the size cap (dropped and warned), set over an existing header, added.
        let policy = r#"{"response":{"set":[
            {"name":"x-smart","value":"method=%REQ(:METHOD)%&path=%REQ(:PATH)%"},
            {"name":"x-alt","value":"%REQ(x-missing?x-other)%|%REQ(x-none)%"},
            {"name":"x-cut","value":"%REQ(:path):4%"},
            {"name":"x-last","value":"%REQ(x-twice)%"},
            {"name":"x-bytes","value":"%REQ(x-bytes)%"},
            {"name":"x-existing","value":"%REQ(x-empty)%"},
            {"name":"x-crlf","value":"a%REQ(x-crlf)%"},
            {"name":"x-big","value":"%REQ(x-big)%"},
            {"name":"server","value":"lit"},
            {"name":"x-after","value":"%REQ(:method)%"}],
            "add":[{"name":"x-added","value":"%REQ(x-other)%"},{"name":"x-added","value":"%REQ(x-big)%"},
                   {"name":"x-added","value":"%REQ(x-none)%"}],
            "remove":["x-remove"]}}"#;
        let t = compile_with_cap(policy, 64);
        assert!(t.response().prerenders);
        let mut request = MemoryMessage::new(
            &[
                (":method", "GET"),
                (":path", "/v1/chat?x=1"),
                ("x-other", "o"),
                ("x-twice", "1"),
                ("x-twice", "2"),
                ("x-empty", ""),
                ("x-crlf", "b\r\nx-evil: 1"),
                ("x-big", &"z".repeat(65)),
            ],
            "",
        );
        request
            .headers
            .push(("x-bytes".to_owned(), b"a\xffb".to_vec()));
        let response = MemoryMessage::new(
            &[
                (":status", "200"),
                ("x-existing", "e"),
                ("server", "s"),
                ("x-remove", "r"),
            ],
            "",
        );
        let [(prerendered, warnings), (rendered, rendered_warnings)] =
            both_ways(&t, &request, &response);
        assert_eq!(prerendered, rendered);
        assert_eq!(warnings, rendered_warnings);
        assert_eq!(
            prerendered.header("x-smart").unwrap(),
            "method=GET&path=/v1/chat?x=1"
        );
        assert_eq!(prerendered.header("x-alt").unwrap(), "o|");
        assert_eq!(prerendered.header("x-cut").unwrap(), "/v1/");
        assert_eq!(prerendered.header("x-last").unwrap(), "2");
        assert_eq!(prerendered.header("x-bytes").unwrap(), "a\u{fffd}b");
        assert_eq!(prerendered.header("x-existing"), None);
        assert_eq!(prerendered.header("x-crlf"), None);
        assert_eq!(prerendered.header("x-big"), None);
        assert_eq!(prerendered.header("server").unwrap(), "lit");
        assert_eq!(prerendered.header("x-after").unwrap(), "GET");
        assert_eq!(prerendered.values("x-added"), ["o"]);
        assert_eq!(prerendered.header("x-remove"), None);
        let kinds: Vec<_> = warnings
            .iter()
            .map(|w| (w.kind, w.field.as_str()))
            .collect();
        assert_eq!(
            kinds,
            [
                (WarningKind::InvalidHeaderValue, "response.set[6].value"),
                (WarningKind::Budget, "response.set[7].value"),
                (WarningKind::Budget, "response.add[1].value"),
            ]
        );
    }

    #[test]
    fn a_prerendered_value_is_the_request_before_it_changed() {
        let t = compile_with_cap(
            r#"{"request":{"set":[{"name":":path","value":"/rewritten"}]},
                "response":{"set":[{"name":"x-path","value":"%REQ(:path)%"}]}}"#,
            64,
        );
        let mut request = MemoryMessage::new(&[(":path", "/original")], "");
        let captured = t.capture_request(&request);
        t.apply_request(
            &mut request,
            BodyMode::HeadersOnly,
            &mut MemoryStreamInfo::default(),
        )
        .unwrap();
        assert_eq!(request.header(":path").unwrap(), "/rewritten");
        let mut response = MemoryMessage::new(&[(":status", "200")], "");
        t.apply_response_captured(
            &mut response,
            &captured,
            BodyMode::HeadersOnly,
            &mut MemoryStreamInfo::default(),
        )
        .unwrap();
        assert_eq!(response.header("x-path").unwrap(), "/original");
    }
}
