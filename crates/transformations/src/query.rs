//! Query parameters of a request path (`query_param`, `set_query_param`,
//! `remove_query_param`).
//!
//! The query is the part of the path after the first `?` and before a `#` (Envoy's `:path`
//! carries no fragment, but one is kept if present). Parameters are separated by `&`; a
//! parameter is `name=value` or a bare `name`. Names and values are compared and returned
//! percent-decoded (RFC 3986), with `+` read as a space as HTML forms and most servers do;
//! invalid escapes (`%zz`) stay as written and bytes that are not UTF-8 are replaced.
//!
//! Editing keeps every parameter it does not touch exactly as written (order, encoding, empty
//! pieces such as `a&&b`); the name and value it writes are percent-encoded: everything but
//! RFC 3986's unreserved characters and `!$'()*,;:@/?` is escaped, so `&`, `=`, `+`, `#`, `%`
//! and spaces in a value can never change the query's structure.

use std::borrow::Cow;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

/// What [`set_query_param`] escapes in names and values.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'!')
    .remove(b'$')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')')
    .remove(b'*')
    .remove(b',')
    .remove(b';')
    .remove(b':')
    .remove(b'@')
    .remove(b'/')
    .remove(b'?');

/// `(path before '?', Some(query) when there is a '?', fragment including '#')`.
fn split(path: &str) -> (&str, Option<&str>, &str) {
    let (rest, fragment) = match path.find('#') {
        Some(i) => (&path[..i], &path[i..]),
        None => (path, ""),
    };
    match rest.split_once('?') {
        Some((base, query)) => (base, Some(query), fragment),
        None => (rest, None, fragment),
    }
}

/// Percent-decodes a query component, `+` as a space.
fn decode(component: &str) -> Cow<'_, str> {
    if !component.contains(['%', '+']) {
        return Cow::Borrowed(component);
    }
    let spaced = component.replace('+', " ");
    Cow::Owned(percent_decode_str(&spaced).decode_utf8_lossy().into_owned())
}

/// The raw name of one parameter (before the first `=`).
fn raw_name(param: &str) -> &str {
    param.split_once('=').map_or(param, |(n, _)| n)
}

fn is_named(param: &str, name: &str) -> bool {
    !param.is_empty() && decode(raw_name(param)) == name
}

/// `query_param(name)`: the first value of `name` in `path`'s query, percent-decoded; empty
/// when absent, when `name` is empty, or for a bare `name` without `=`.
pub fn query_param(path: &str, name: &str) -> String {
    let (_, Some(query), _) = split(path) else {
        return String::new();
    };
    if name.is_empty() {
        return String::new();
    }
    query
        .split('&')
        .find(|p| is_named(p, name))
        .and_then(|p| p.split_once('='))
        .map(|(_, v)| decode(v).into_owned())
        .unwrap_or_default()
}

/// `set_query_param(path, name, value)`: `path` with `name=value` (both percent-encoded). The
/// first parameter named `name` is replaced where it stands and later ones are removed; if
/// there is none, the parameter is appended. An empty `name` gives `path` unchanged.
pub fn set_query_param(path: &str, name: &str, value: &str) -> String {
    if name.is_empty() {
        return path.to_owned();
    }
    let (base, query, fragment) = split(path);
    let pair = format!(
        "{}={}",
        utf8_percent_encode(name, COMPONENT),
        utf8_percent_encode(value, COMPONENT)
    );
    let mut out = String::with_capacity(path.len() + pair.len() + 1);
    out.push_str(base);
    out.push('?');
    let mut placed = false;
    let mut first = true;
    if let Some(query) = query.filter(|q| !q.is_empty()) {
        for param in query.split('&') {
            let piece = if is_named(param, name) {
                if placed {
                    continue;
                }
                placed = true;
                pair.as_str()
            } else {
                param
            };
            if !first {
                out.push('&');
            }
            out.push_str(piece);
            first = false;
        }
    }
    if !placed {
        if !first {
            out.push('&');
        }
        out.push_str(&pair);
    }
    out.push_str(fragment);
    out
}

/// `remove_query_param(path, name)`: `path` without any parameter named `name`; the `?` goes
/// too when nothing is left. A path without that parameter is returned unchanged.
pub fn remove_query_param(path: &str, name: &str) -> String {
    let (base, Some(query), fragment) = split(path) else {
        return path.to_owned();
    };
    if name.is_empty() || !query.split('&').any(|p| is_named(p, name)) {
        return path.to_owned();
    }
    let kept: Vec<&str> = query.split('&').filter(|p| !is_named(p, name)).collect();
    let mut out = String::with_capacity(path.len());
    out.push_str(base);
    if !kept.iter().all(|p| p.is_empty()) {
        out.push('?');
        out.push_str(&kept.join("&"));
    }
    out.push_str(fragment);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_first_decoded_value() {
        let p = "/a/b?x=1&name=J%C3%B6rg+M%20x&x=2&flag&e=&enc%20oded=yes";
        assert_eq!(query_param(p, "x"), "1", "first value");
        assert_eq!(query_param(p, "name"), "Jörg M x", "percent and + decoded");
        assert_eq!(query_param(p, "flag"), "", "bare name");
        assert_eq!(query_param(p, "e"), "", "empty value");
        assert_eq!(query_param(p, "enc oded"), "yes", "names are decoded too");
        assert_eq!(query_param(p, "absent"), "");
        assert_eq!(query_param(p, ""), "");
        assert_eq!(query_param("/no-query", "x"), "");
        assert_eq!(query_param("/a?", "x"), "");
        assert_eq!(
            query_param("/a?x=%zz%", "x"),
            "%zz%",
            "invalid escapes stay"
        );
        assert_eq!(
            query_param("/a?x=%FF", "x"),
            "\u{FFFD}",
            "non-UTF-8 replaced"
        );
        assert_eq!(query_param("/a?x=a=b", "x"), "a=b", "first '=' splits");
        assert_eq!(query_param("/a?x=1#x=2", "x"), "1");
        assert_eq!(query_param("/a#f?x=1", "x"), "", "after '#' is a fragment");
        assert_eq!(query_param("", "x"), "");
    }

    #[test]
    fn set_appends_or_replaces_in_place_keeping_the_rest_as_written() {
        assert_eq!(
            set_query_param("/v1/chat", "api-version", "2024-06-01"),
            "/v1/chat?api-version=2024-06-01"
        );
        assert_eq!(set_query_param("/a?", "x", "1"), "/a?x=1");
        assert_eq!(
            set_query_param("/a?b=%2F+c&x=old&c&x=again", "x", "new"),
            "/a?b=%2F+c&x=new&c",
            "first replaced in place, later duplicates removed, others byte for byte"
        );
        assert_eq!(
            set_query_param("/a?b=1&&c=2", "x", "1"),
            "/a?b=1&&c=2&x=1",
            "empty pieces kept"
        );
        assert_eq!(
            set_query_param("/a?q=1", "my key", "a&b=c+d#e%/ü"),
            "/a?q=1&my%20key=a%26b%3Dc%2Bd%23e%25/%C3%BC"
        );
        assert_eq!(set_query_param("/a?flag", "flag", "1"), "/a?flag=1");
        assert_eq!(set_query_param("/a#frag", "x", "1"), "/a?x=1#frag");
        assert_eq!(set_query_param("/a?x=1", "", "1"), "/a?x=1", "empty name");
        assert_eq!(set_query_param("", "x", ""), "?x=");
        let round = set_query_param("/a", "k", "v &=+%?#");
        assert_eq!(query_param(&round, "k"), "v &=+%?#", "round trip");
    }

    #[test]
    fn remove_drops_every_occurrence_and_a_lone_question_mark() {
        assert_eq!(
            remove_query_param("/a?debug=1&x=%20y&debug&z", "debug"),
            "/a?x=%20y&z"
        );
        assert_eq!(remove_query_param("/a?debug=1", "debug"), "/a");
        assert_eq!(remove_query_param("/a?debug=1#f", "debug"), "/a#f");
        assert_eq!(remove_query_param("/a?de%62ug=1&k", "debug"), "/a?k");
        assert_eq!(
            remove_query_param("/a?x=1&&y", "debug"),
            "/a?x=1&&y",
            "untouched when absent"
        );
        assert_eq!(remove_query_param("/a?&debug&", "debug"), "/a");
        assert_eq!(remove_query_param("/a", "debug"), "/a");
        assert_eq!(remove_query_param("/a?x", ""), "/a?x");
    }
}
