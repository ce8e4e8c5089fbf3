//! Response values rendered at the request.
//!
//! A response value made only of text and `%REQ()%` operators reads nothing but the request
//! headers as they were at the first request callback, which is exactly what the request
//! snapshot keeps. Rendering such values when the snapshot would be taken gives the same text,
//! and the response side then neither keeps a snapshot nor builds render data: it sends what was
//! rendered. Checks that depend on the value (empty, CR/LF/NUL, the size cap) still happen when
//! the response side applies, in the same order, with the same warnings.

use smallvec::SmallVec;

use crate::message::HeaderMap;
use crate::operators::{Operator, OperatorKind, Segment};
use crate::release::KgatewayRelease;
use crate::side::Side;
use crate::template::{Compiled, HeaderSnapshot, RenderError, too_large};

/// Bytes of rendered text kept inside the stream's filter before it needs an allocation of its
/// own: the lab's `X-Smart-Header` with a usual path fits.
const INLINE_TEXT: usize = 128;

/// The span of a value whose render passed the size cap.
const TOO_LARGE: (u32, u32) = (u32::MAX, u32::MAX);

/// A side's `set` then `add` values, rendered back to back.
#[derive(Debug, Default, Clone)]
pub struct Prerendered {
    text: Text,
    /// Per value, where it starts and ends in `text` ([`TOO_LARGE`] when its render passed the
    /// cap).
    spans: SmallVec<[(u32, u32); 4]>,
}

impl Prerendered {
    /// The `index`-th value (`set` entries first, then `add` entries).
    pub(crate) fn value(&self, index: usize, cap: usize) -> Result<&[u8], RenderError> {
        let span = self.spans.get(index).copied().unwrap_or_default();
        if span == TOO_LARGE {
            return Err(too_large(cap));
        }
        Ok(self
            .text
            .as_slice()
            .get(span.0 as usize..span.1 as usize)
            .unwrap_or_default())
    }
}

/// Bytes appended in place, inside the stream's filter up to [`INLINE_TEXT`], then in a `Vec`:
/// the few short appends of a render, each a bounds check and a copy.
#[derive(Debug, Clone)]
struct Text {
    inline: [u8; INLINE_TEXT],
    inline_len: usize,
    spilled: Option<Vec<u8>>,
}

impl Default for Text {
    fn default() -> Text {
        Text {
            inline: [0; INLINE_TEXT],
            inline_len: 0,
            spilled: None,
        }
    }
}

impl Text {
    fn extend_from_slice(&mut self, bytes: &[u8]) {
        if let Some(spilled) = &mut self.spilled {
            spilled.extend_from_slice(bytes);
            return;
        }
        let end = self.inline_len + bytes.len();
        match self.inline.get_mut(self.inline_len..end) {
            Some(room) => {
                room.copy_from_slice(bytes);
                self.inline_len = end;
            }
            None => {
                let mut spilled = Vec::with_capacity(end.max(2 * INLINE_TEXT));
                spilled.extend_from_slice(&self.inline[..self.inline_len]);
                spilled.extend_from_slice(bytes);
                self.spilled = Some(spilled);
            }
        }
    }

    fn as_slice(&self) -> &[u8] {
        match &self.spilled {
            Some(spilled) => spilled,
            None => &self.inline[..self.inline_len],
        }
    }

    fn len(&self) -> usize {
        self.as_slice().len()
    }

    fn truncate(&mut self, len: usize) {
        match &mut self.spilled {
            Some(spilled) => spilled.truncate(len),
            None => self.inline_len = self.inline_len.min(len),
        }
    }
}

/// What the response side keeps of the request, taken at the first request callback (before
/// the request transformation and the router change the request): the request headers its
/// values read, or, when all of them are text and `%REQ()%`, those values already rendered.
#[derive(Debug, Default, Clone)]
pub struct RequestCapture {
    pub(crate) snapshot: HeaderSnapshot,
    pub(crate) prerendered: Option<Prerendered>,
}

impl Side {
    /// Whether every value of this side is text and `%REQ()%` operators and the side does
    /// nothing else that renders (no body, no dynamic metadata, no `parseAs: AsJson`), with at
    /// least one operator: its values can then be rendered from the request alone.
    pub(crate) fn compute_prerenders(&self) -> bool {
        let mut any_op = false;
        for op in self.set.iter().chain(&self.add) {
            match &op.value {
                Compiled::Empty | Compiled::Literal(_) => {}
                Compiled::Ops { .. } => {
                    let mut operators = op.value.operators().peekable();
                    any_op |= operators.peek().is_some();
                    if !operators.all(|o| matches!(o.kind, OperatorKind::Req { .. })) {
                        return false;
                    }
                }
                Compiled::Template { .. } => return false,
            }
        }
        any_op
            && self.body.is_none()
            && self.metadata.is_empty()
            && self.parse_as != crate::config::ParseAs::AsJson
    }

    /// Renders the side's `set` then `add` values from the request headers, straight into the
    /// stream's own buffer. A literal value is not copied: it is sent as compiled.
    pub(crate) fn prerender<H: HeaderMap + ?Sized>(
        &self,
        request: &H,
        cap: usize,
        release: KgatewayRelease,
        rendered: &mut Prerendered,
    ) {
        rendered.text.truncate(0);
        rendered.spans.clear();
        let text = &mut rendered.text;
        for op in self.set.iter().chain(&self.add) {
            let start = text.len();
            match &op.value {
                Compiled::Empty | Compiled::Literal(_) => {}
                Compiled::Ops { segments, .. } => {
                    for segment in segments.iter() {
                        match segment {
                            Segment::Literal(literal) => text.extend_from_slice(literal.as_bytes()),
                            Segment::Op(operator) => {
                                write_request_operator(operator, request, release, text)
                            }
                        }
                    }
                }
                // Not prerendered (`compute_prerenders`); nothing reaches here.
                Compiled::Template { .. } => {}
            }
            // A value only grows as its segments are appended: past the cap at the end is past
            // it at some segment, as a render at the response sees it.
            let span = u32::try_from(start)
                .and_then(|start| u32::try_from(text.len()).map(|end| (start, end)));
            rendered.spans.push(match span {
                Ok(span) if text.len() - start <= cap => span,
                _ => {
                    text.truncate(start);
                    TOO_LARGE
                }
            });
        }
    }
}

/// `%REQ(name?alt)%` (with its `:N`) from the request headers, as [`Operator::eval`] renders it
/// from a snapshot: the last value (or, for kgateway v2.4, every value joined with `", "`),
/// invalid UTF-8 replaced, the alternative when the name is absent.
fn write_request_operator<H: HeaderMap + ?Sized>(
    operator: &Operator,
    request: &H,
    release: KgatewayRelease,
    text: &mut Text,
) {
    let OperatorKind::Req { name, alt } = &operator.kind else {
        return; // not prerendered (`compute_prerenders`)
    };
    let start = text.len();
    let mut append = |name: &str| {
        if !release.joins_repeated_headers() {
            return request.with_last_str(name, &mut |v| text.extend_from_slice(v.as_bytes()));
        }
        let mut first = true;
        request.with_each(name, &mut |v| {
            if !std::mem::take(&mut first) {
                text.extend_from_slice(b", ");
            }
            text.extend_from_slice(String::from_utf8_lossy(v).as_bytes());
        })
    };
    if !append(name)
        && let Some(alt) = alt
    {
        append(alt);
    }
    if let Some(cut) = operator.cut(text.as_slice(), start) {
        text.truncate(cut);
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
            {"name":"x-cut-utf8","value":"%REQ(x-utf8):2%"},
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
                ("x-utf8", "aéb"),
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
        assert_eq!(
            prerendered.header("x-cut-utf8").unwrap(),
            "a",
            "not inside é"
        );
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
                (WarningKind::InvalidHeaderValue, "response.set[7].value"),
                (WarningKind::Budget, "response.set[8].value"),
                (WarningKind::Budget, "response.add[1].value"),
            ]
        );
    }

    #[test]
    fn prerendered_values_longer_than_the_inline_room_are_kept_whole() {
        let t = compile_with_cap(
            r#"{"response":{"set":[{"name":"x-a","value":"a=%REQ(x-long)%"},
                {"name":"x-b","value":"%REQ(x-long)%;%REQ(x-long):10%"},
                {"name":"x-c","value":"%REQ(:method)%"}]}}"#,
            1024,
        );
        let long = "0123456789".repeat(30);
        let request = MemoryMessage::new(&[(":method", "PUT"), ("x-long", &long)], "");
        let response = MemoryMessage::new(&[(":status", "200")], "");
        let [(prerendered, warnings), (rendered, rendered_warnings)] =
            both_ways(&t, &request, &response);
        assert_eq!(prerendered, rendered);
        assert!(warnings.is_empty() && rendered_warnings.is_empty());
        assert_eq!(prerendered.header("x-a").unwrap(), format!("a={long}"));
        assert_eq!(
            prerendered.header("x-b").unwrap(),
            format!("{long};0123456789")
        );
        assert_eq!(prerendered.header("x-c").unwrap(), "PUT");
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
