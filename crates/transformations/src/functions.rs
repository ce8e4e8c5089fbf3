//! kgateway's template functions that need no request context.
//!
//! Semantics follow kgateway v2.3 (`substring` byte offsets, padded base64 engines, invalid
//! or non-UTF-8 decode results give an empty string, `raw_string` JSON-escapes,
//! `replace_with_random` draws a fresh value on every call), with one deliberate difference:
//! `substring` never panics on a non-character boundary (the bytes are converted lossily).
//!
//! Every function charges the bytes it produces to the render budget before allocating them
//! (`minijinja::budget`, a no-op outside a metered render).

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE};
use minijinja::budget::charge;

type Result<T> = std::result::Result<T, minijinja::Error>;

/// The length of `input` with every `pattern` replaced by `with_len` bytes.
fn replaced_len(input: &str, pattern: &str, with_len: usize) -> usize {
    let count = if pattern.is_empty() {
        input.chars().count() + 1
    } else {
        input.matches(pattern).count()
    };
    let removed = count.saturating_mul(pattern.len());
    (input.len() - removed.min(input.len())).saturating_add(count.saturating_mul(with_len))
}

/// `substring(s, start[, len])`: byte offsets; start past the end gives empty; a `len` that
/// runs past the end runs to the end.
pub fn substring(input: &str, start: usize, len: Option<usize>) -> Result<String> {
    let bytes = input.as_bytes();
    if start >= bytes.len() {
        return Ok(String::new());
    }
    let end = match len {
        Some(len) if start.saturating_add(len) <= bytes.len() => start + len,
        _ => bytes.len(),
    };
    charge(end - start)?;
    Ok(String::from_utf8_lossy(&bytes[start..end]).into_owned())
}

/// The length of the padded base64 text of `n` bytes.
fn encoded_len(n: usize) -> usize {
    n.div_ceil(3).saturating_mul(4)
}

pub fn base64_encode(input: &[u8]) -> Result<String> {
    charge(encoded_len(input.len()))?;
    Ok(STANDARD.encode(input))
}

pub fn base64url_encode(input: &[u8]) -> Result<String> {
    charge(encoded_len(input.len()))?;
    Ok(URL_SAFE.encode(input))
}

pub fn base64_decode(input: &str) -> Result<String> {
    charge(input.len())?;
    Ok(STANDARD
        .decode(input)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .unwrap_or_default())
}

pub fn base64url_decode(input: &str) -> Result<String> {
    charge(input.len())?;
    Ok(URL_SAFE
        .decode(input)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .unwrap_or_default())
}

/// `replace_with_random(s, pattern)`: every occurrence of `pattern` becomes one fresh random
/// 128-bit value, base64 without padding, fresh per call (as kgateway v2.3's).
pub fn replace_with_random(input: &str, pattern: &str) -> Result<String> {
    // 16 random bytes are 22 characters of base64 without padding.
    charge(replaced_len(input, pattern, 22))?;
    let mut random = [0u8; 16];
    getrandom::fill(&mut random).map_err(|e| {
        minijinja::Error::new(
            minijinja::ErrorKind::InvalidOperation,
            format!("no randomness available: {e}"),
        )
    })?;
    Ok(input.replace(pattern, &STANDARD_NO_PAD.encode(random)))
}

pub fn replace_with_string(input: &str, pattern: &str, replacement: &str) -> Result<String> {
    charge(replaced_len(input, pattern, replacement.len()))?;
    Ok(input.replace(pattern, replacement))
}

/// `raw_string(v)`: the JSON string escaping of `v`, without the outer quotes.
pub fn raw_string(value: &str) -> Result<String> {
    // The escaped text: 6 bytes (`\u001f`) at most for a byte that needs escaping.
    let escaped = value
        .bytes()
        .filter(|&b| b < 0x20 || b == b'"' || b == b'\\')
        .count();
    charge(value.len().saturating_add(escaped.saturating_mul(5)))?;
    let quoted = serde_json::Value::String(value.to_owned()).to_string();
    Ok(quoted[1..quoted.len() - 1].to_owned())
}

/// `get_cookie(name)` / `get_cookie_i(name)` (kgateway v2.4) over the values of every `Cookie`
/// header in order. Each header is split on `;`, each pair trimmed and split at its first `=`
/// (name and value trimmed; a pair without `=` or with an empty name is no cookie). The first
/// pair of that name answers; `ignore_case` compares names lowercased. No such cookie: empty.
///
/// Where one header holds several spellings of a name (`a=1; A=2`), `get_cookie_i` takes the
/// first; kgateway v2.4's module takes one of them at random per process.
pub fn cookie<S: AsRef<str>>(
    cookie_headers: impl IntoIterator<Item = S>,
    name: &str,
    ignore_case: bool,
) -> String {
    let wanted = if ignore_case {
        std::borrow::Cow::Owned(name.to_lowercase())
    } else {
        std::borrow::Cow::Borrowed(name)
    };
    for header in cookie_headers {
        for pair in header.as_ref().split(';') {
            let Some((candidate, value)) = pair.trim().split_once('=') else {
                continue;
            };
            let candidate = candidate.trim();
            let same = if ignore_case {
                candidate.to_lowercase() == *wanted
            } else {
                candidate == wanted.as_ref()
            };
            if same && !candidate.is_empty() {
                return value.trim().to_owned();
            }
        }
    }
    String::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substring_edges() {
        assert_eq!(substring("hello", 1, Some(3)).unwrap(), "ell");
        assert_eq!(substring("hello", 1, None).unwrap(), "ello");
        assert_eq!(substring("hello", 0, Some(5)).unwrap(), "hello");
        assert_eq!(
            substring("hello", 3, Some(10)).unwrap(),
            "lo",
            "overlong len runs to the end"
        );
        assert_eq!(substring("hello", 5, None).unwrap(), "", "start at the end");
        assert_eq!(substring("hello", 50, Some(1)).unwrap(), "");
        assert_eq!(substring("hello", 2, Some(0)).unwrap(), "");
        assert_eq!(substring("", 0, None).unwrap(), "");
        assert_eq!(
            substring("hello", 1, Some(usize::MAX)).unwrap(),
            "ello",
            "no overflow"
        );
        // Byte offsets inside a multi-byte character do not panic.
        assert_eq!(substring("héllo", 2, Some(2)).unwrap(), "\u{FFFD}l");
    }

    #[test]
    fn base64_round_trips_and_invalid_input() {
        assert_eq!(base64_encode(b"hello?>").unwrap(), "aGVsbG8/Pg==");
        assert_eq!(base64url_encode(b"hello?>").unwrap(), "aGVsbG8_Pg==");
        assert_eq!(base64_decode("aGVsbG8/Pg==").unwrap(), "hello?>");
        assert_eq!(base64url_decode("aGVsbG8_Pg==").unwrap(), "hello?>");
        assert_eq!(base64_decode("not base64!").unwrap(), "");
        assert_eq!(
            base64_decode("aGVsbG8_Pg==").unwrap(),
            "",
            "url alphabet in standard decoder"
        );
        assert_eq!(base64url_decode("aGVsbG8/Pg==").unwrap(), "");
        assert_eq!(base64_decode("aGVsbG8/Pg").unwrap(), "", "padding required");
        assert_eq!(base64_decode("//8=").unwrap(), "", "non-UTF-8 result");
        assert_eq!(base64url_decode("__8=").unwrap(), "", "non-UTF-8 result");
        assert_eq!(base64_decode("").unwrap(), "");
    }

    #[test]
    fn replace_with_random_is_fresh_per_call() {
        let a = replace_with_random("x-PAT-y-PAT", "PAT").unwrap();
        let b = replace_with_random("x-PAT-y-PAT", "PAT").unwrap();
        assert_ne!(a, b);
        let token = &a[2..24];
        assert_eq!(token.len(), 22, "128 bits, base64 without padding");
        assert_eq!(a, format!("x-{token}-y-{token}"), "one value per call");
        assert_eq!(replace_with_random("none", "PAT").unwrap(), "none");
    }

    #[test]
    fn replace_with_string_all_occurrences() {
        assert_eq!(replace_with_string("a-b-a", "a", "c").unwrap(), "c-b-c");
        assert_eq!(replace_with_string("abc", "x", "y").unwrap(), "abc");
    }

    #[test]
    fn raw_string_escapes() {
        assert_eq!(raw_string(r#"say "hi"\n"#).unwrap(), r#"say \"hi\"\\n"#);
        assert_eq!(raw_string("line\nbreak\ttab").unwrap(), r"line\nbreak\ttab");
        assert_eq!(raw_string("plain").unwrap(), "plain");
        assert_eq!(raw_string("").unwrap(), "");
        assert_eq!(raw_string("\u{1}").unwrap(), r"\u0001");
    }
}
