//! Envoy command operators (`%REQ(x-foo)%`, `%START_TIME%`, ...) in values.
//!
//! Parsed once at config time into [`Segment`]s. Rules, chosen to match Envoy where it matters
//! and to keep kgateway configs that merely contain a `%` working:
//! - `%%` is a literal `%`.
//! - `%NAME...%` where NAME is `[A-Z][A-Z0-9_]{2,}` is an operator; an unknown NAME, or a known
//!   one with broken syntax (`%REQ(x`), is a config error, as Envoy rejects them.
//! - Any other `%` (e.g. URL encoding like `%2F` or `%E2%80%99`, or `50% off`) is literal text.
//! - A missing header (or value) renders empty, as in Envoy's header formatters (not the `-`
//!   of access logs).
//! - `:N` truncates the value to at most N bytes (Envoy's rule), backed off to a UTF-8
//!   character boundary so the result stays text.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

/// One command operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operator {
    pub kind: OperatorKind,
    /// `:N` truncation, in bytes.
    pub max_len: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OperatorKind {
    /// `%REQ(name?alt)%`: a request header (lowercased names).
    Req { name: String, alt: Option<String> },
    /// `%RESP(name?alt)%`: a response header (empty in the request phase).
    Resp { name: String, alt: Option<String> },
    /// `%PROTOCOL%`: `HTTP/1.1`, `HTTP/2`, `HTTP/3`.
    Protocol,
    /// `%START_TIME%` in Envoy's default format, `2026-11-26T13:46:26.123Z`.
    StartTime,
    /// `%DOWNSTREAM_REMOTE_ADDRESS%`: `ip:port` (`[v6]:port`).
    DownstreamRemoteAddress,
    /// `%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%`.
    DownstreamRemoteAddressWithoutPort,
}

/// Literal text or an operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Literal(String),
    Op(Operator),
}

/// What operators read at render time.
pub trait OperatorSource {
    fn request_header(&self, name: &str) -> Option<Cow<'_, str>>;
    fn response_header(&self, name: &str) -> Option<Cow<'_, str>>;
    fn protocol(&self) -> Option<&str>;
    fn start_time(&self) -> Option<&str>;
    fn downstream_remote_address(&self) -> Option<SocketAddr>;
}

/// Splits `text` into literal text and operators. Adjacent literals are merged.
pub fn parse(text: &str) -> Result<Vec<Segment>, String> {
    let bytes = text.as_bytes();
    let mut segments = Vec::new();
    let mut literal = String::new();
    let mut i = 0;
    let mut lit_start = 0;
    while let Some(off) = text[i..].find('%') {
        let p = i + off;
        if bytes.get(p + 1) == Some(&b'%') {
            literal.push_str(&text[lit_start..p]);
            literal.push('%');
            i = p + 2;
            lit_start = i;
            continue;
        }
        match parse_operator(text, p)? {
            Some((op, end)) => {
                literal.push_str(&text[lit_start..p]);
                if !literal.is_empty() {
                    segments.push(Segment::Literal(std::mem::take(&mut literal)));
                }
                segments.push(Segment::Op(op));
                i = end;
                lit_start = end;
            }
            None => i = p + 1,
        }
    }
    literal.push_str(&text[lit_start..]);
    if !literal.is_empty() {
        segments.push(Segment::Literal(literal));
    }
    Ok(segments)
}

/// Whether [`parse`] could find anything but literal text in `text`: an operator starts with
/// `%` and an uppercase letter, and `%%` is an escaped `%`. Without either, `parse` gives back
/// `text` unchanged.
pub fn may_contain(text: &str) -> bool {
    memchr::memchr_iter(b'%', text.as_bytes())
        .any(|i| matches!(text.as_bytes().get(i + 1), Some(b'%' | b'A'..=b'Z')))
}

/// Tries to read an operator starting at the `%` at `p`. `Ok(None)`: not an operator, the
/// `%` is literal. Returns the operator and the index just past its closing `%`.
fn parse_operator(text: &str, p: usize) -> Result<Option<(Operator, usize)>, String> {
    let bytes = text.as_bytes();
    let name_start = p + 1;
    let mut j = name_start;
    while j < bytes.len()
        && (bytes[j].is_ascii_uppercase() || bytes[j].is_ascii_digit() || bytes[j] == b'_')
    {
        j += 1;
    }
    let name = &text[name_start..j];
    let looks_like_name = name.len() >= 3 && bytes[name_start].is_ascii_uppercase();
    let next = bytes.get(j).copied();
    if !looks_like_name || !matches!(next, Some(b'%' | b'(' | b':')) {
        if looks_like_name && is_known(name) {
            return Err(format!("malformed command operator %{name} at byte {p}"));
        }
        return Ok(None);
    }
    if !is_known(name) {
        return Err(format!("unknown command operator %{name}% at byte {p}"));
    }
    let malformed = || format!("malformed command operator %{name}...% at byte {p}");
    let mut arg = None;
    if next == Some(b'(') {
        let close = text[j..].find(')').map(|o| j + o).ok_or_else(malformed)?;
        arg = Some(&text[j + 1..close]);
        j = close + 1;
    }
    let mut max_len = None;
    if bytes.get(j) == Some(&b':') {
        let start = j + 1;
        let mut k = start;
        while k < bytes.len() && bytes[k].is_ascii_digit() {
            k += 1;
        }
        let n: usize = text[start..k].parse().map_err(|_| malformed())?;
        max_len = Some(n);
        j = k;
    }
    if bytes.get(j) != Some(&b'%') {
        return Err(malformed());
    }
    let header_arg = |arg: Option<&str>| -> Result<(String, Option<String>), String> {
        let arg = arg.filter(|a| !a.is_empty()).ok_or_else(|| {
            format!("command operator %{name}(...)% at byte {p} needs a header name")
        })?;
        let (main, alt) = match arg.split_once('?') {
            Some((m, a)) => (m, Some(a.to_ascii_lowercase())),
            None => (arg, None),
        };
        if main.is_empty() || alt.as_deref() == Some("") || main.contains('?') {
            return Err(malformed());
        }
        Ok((main.to_ascii_lowercase(), alt))
    };
    let no_arg = |kind: OperatorKind| -> Result<OperatorKind, String> {
        match arg {
            None => Ok(kind),
            Some(_) => Err(format!(
                "command operator %{name}% at byte {p} takes no argument (formats are not supported)"
            )),
        }
    };
    let kind = match name {
        "REQ" => {
            let (name, alt) = header_arg(arg)?;
            OperatorKind::Req { name, alt }
        }
        "RESP" => {
            let (name, alt) = header_arg(arg)?;
            OperatorKind::Resp { name, alt }
        }
        "PROTOCOL" => no_arg(OperatorKind::Protocol)?,
        "START_TIME" => no_arg(OperatorKind::StartTime)?,
        "DOWNSTREAM_REMOTE_ADDRESS" => no_arg(OperatorKind::DownstreamRemoteAddress)?,
        "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT" => {
            no_arg(OperatorKind::DownstreamRemoteAddressWithoutPort)?
        }
        _ => unreachable!("checked by is_known"),
    };
    Ok(Some((Operator { kind, max_len }, j + 1)))
}

fn is_known(name: &str) -> bool {
    matches!(
        name,
        "REQ"
            | "RESP"
            | "PROTOCOL"
            | "START_TIME"
            | "DOWNSTREAM_REMOTE_ADDRESS"
            | "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT"
    )
}

impl Operator {
    /// The rendered value; empty when the information is missing.
    pub fn eval(&self, src: &dyn OperatorSource, out: &mut String) {
        let start = out.len();
        match &self.kind {
            OperatorKind::Req { name, alt } => {
                let v = src
                    .request_header(name)
                    .or_else(|| alt.as_deref().and_then(|a| src.request_header(a)));
                out.push_str(v.as_deref().unwrap_or(""));
            }
            OperatorKind::Resp { name, alt } => {
                let v = src
                    .response_header(name)
                    .or_else(|| alt.as_deref().and_then(|a| src.response_header(a)));
                out.push_str(v.as_deref().unwrap_or(""));
            }
            OperatorKind::Protocol => out.push_str(src.protocol().unwrap_or("")),
            OperatorKind::StartTime => out.push_str(src.start_time().unwrap_or("")),
            OperatorKind::DownstreamRemoteAddress => {
                if let Some(a) = src.downstream_remote_address() {
                    let _ = write!(out, "{a}");
                }
            }
            OperatorKind::DownstreamRemoteAddressWithoutPort => {
                if let Some(a) = src.downstream_remote_address() {
                    let _ = write!(out, "{}", a.ip());
                }
            }
        }
        if let Some(cut) = self.cut(out.as_bytes(), start) {
            out.truncate(cut);
        }
    }

    /// Where `:N` cuts the text this operator appended to `text` from `start` (UTF-8): at most
    /// N bytes, back to a character boundary; `None` when it fits.
    pub(crate) fn cut(&self, text: &[u8], start: usize) -> Option<usize> {
        // `:N` may be as large as usize::MAX in the config: no overflow.
        let limit = start.saturating_add(self.max_len?);
        if text.len() <= limit {
            return None;
        }
        let mut cut = limit;
        // A UTF-8 continuation byte is 0b10xxxxxx: a character starts before it.
        while cut > start && text[cut] & 0xC0 == 0x80 {
            cut -= 1;
        }
        Some(cut)
    }
}

/// Envoy's default `%START_TIME%` format: `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC, milliseconds).
pub fn format_start_time(t: SystemTime) -> String {
    let (secs, millis) = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (d.as_secs() as i64, d.subsec_millis()),
        // Before 1970: not a real request time; render the epoch rather than fail.
        Err(_) => (0, 0),
    };
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day): Howard Hinnant's `civil_from_days`.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    struct Src;
    impl OperatorSource for Src {
        fn request_header(&self, name: &str) -> Option<Cow<'_, str>> {
            match name {
                ":method" => Some("GET".into()),
                ":path" => Some("/a/b".into()),
                "x-alt" => Some("alt-value".into()),
                "x-utf8" => Some("héllo".into()),
                _ => None,
            }
        }
        fn response_header(&self, name: &str) -> Option<Cow<'_, str>> {
            (name == "content-type").then(|| "text/plain".into())
        }
        fn protocol(&self) -> Option<&str> {
            Some("HTTP/1.1")
        }
        fn start_time(&self) -> Option<&str> {
            Some("2026-11-26T13:46:26.123Z")
        }
        fn downstream_remote_address(&self) -> Option<SocketAddr> {
            Some("[2001:db8::1]:4567".parse().unwrap())
        }
    }

    fn render(text: &str) -> String {
        let mut out = String::new();
        for s in parse(text).unwrap() {
            match s {
                Segment::Literal(l) => out.push_str(&l),
                Segment::Op(op) => op.eval(&Src, &mut out),
            }
        }
        out
    }

    #[test]
    fn req_and_resp() {
        assert_eq!(render("m=%REQ(:METHOD)%&p=%REQ(:path)%"), "m=GET&p=/a/b");
        assert_eq!(render("%RESP(Content-Type)%"), "text/plain");
        assert_eq!(render("[%REQ(x-missing)%]"), "[]", "missing renders empty");
    }

    #[test]
    fn alternative_header() {
        assert_eq!(render("%REQ(x-missing?X-Alt)%"), "alt-value");
        assert_eq!(render("%REQ(:method?x-alt)%"), "GET");
        assert_eq!(render("%REQ(x-missing?x-missing2)%"), "");
    }

    #[test]
    fn truncation() {
        assert_eq!(render("%REQ(:path):2%"), "/a");
        assert_eq!(render("%REQ(:path):0%"), "");
        assert_eq!(render("%REQ(:path):100%"), "/a/b");
        assert_eq!(render("%REQ(x-missing?x-alt):3%"), "alt");
        // "é" is two bytes: cutting inside it backs off to the boundary.
        assert_eq!(render("%REQ(x-utf8):2%"), "h");
        assert_eq!(render("%PROTOCOL:4%"), "HTTP");
    }

    #[test]
    fn stream_info_operators() {
        assert_eq!(render("%PROTOCOL%"), "HTTP/1.1");
        assert_eq!(render("%START_TIME%"), "2026-11-26T13:46:26.123Z");
        assert_eq!(render("%DOWNSTREAM_REMOTE_ADDRESS%"), "[2001:db8::1]:4567");
        assert_eq!(
            render("%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"),
            "2001:db8::1"
        );
    }

    #[test]
    fn percent_escapes_and_literal_percents() {
        assert_eq!(render("100%%"), "100%");
        assert_eq!(render("%%REQ(:method)%%"), "%REQ(:method)%");
        assert_eq!(render("50% off"), "50% off");
        assert_eq!(render("a%2Fb%E2%80%99"), "a%2Fb%E2%80%99");
        assert_eq!(render("%"), "%");
        assert_eq!(render("%abc%"), "%abc%");
        assert_eq!(
            parse("plain").unwrap(),
            vec![Segment::Literal("plain".into())]
        );
        assert!(parse("").unwrap().is_empty());
    }

    #[test]
    fn errors() {
        for bad in [
            "%REQ(x",
            "%REQ(x)",
            "%REQ%",
            "%REQ()%",
            "%REQ(a?)%",
            "%REQ(x):%",
            "%REQ(x):1a%",
            "%UNKNOWN_OP%",
            "%FOO(x)%",
            "%START_TIME(%s)%",
            "%PROTOCOL",
        ] {
            assert!(parse(bad).is_err(), "{bad} should be rejected");
        }
        assert!(parse("%UPSTREAM_HOST%").unwrap_err().contains("unknown"));
    }

    #[test]
    fn start_time_format() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_700_786_123);
        assert_eq!(format_start_time(t), "2026-11-26T13:46:26.123Z");
        assert_eq!(format_start_time(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(format_start_time(leap), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn text_without_an_operator_start_parses_to_itself() {
        for text in [
            "plain",
            "100% sure",
            "a%b",
            "{% if x %}",
            "%}",
            "%1%",
            "%a(b)%",
            "%",
        ] {
            assert!(!may_contain(text), "{text:?}");
            assert_eq!(parse(text).unwrap(), [Segment::Literal(text.to_owned())]);
        }
        for text in ["%%", "%REQ(a)%", "a%PROTOCOL%", "%UNKNOWN%"] {
            assert!(may_contain(text), "{text:?}");
        }
    }
}
