//! `json_set` and `json_delete`: change one value of a JSON text in place.
//!
//! The document is scanned once (validated completely, nesting limited to
//! [`MAX_DEPTH`] levels like the body parser) to find the byte range a JSON Pointer
//! (RFC 6901) addresses; the result is the document with only that range replaced. Key order,
//! whitespace, numbers as written and unicode escapes elsewhere stay byte for byte. Nothing is
//! parsed into a tree, so the cost is one pass over the document plus one copy.
//!
//! Addressing:
//! - `""` is the whole document; otherwise the pointer is `/`-separated tokens with `~1` for
//!   `/` and `~0` for `~`.
//! - In an object a token names a member (escaped keys are compared decoded). With duplicate
//!   keys, the last one is addressed (the one a parser keeps).
//! - In an array a token is an index (`0`, `12`; no leading zeros) or `-` (past the end).
//!
//! [`set`]: an existing value is replaced; a missing member is appended to its object
//! (`,"key":value`); an array index equal to the length, or `-`, appends an element. A pointer
//! whose parent does not exist (or is not a container) leaves the document unchanged.
//! [`delete`]: the member or element goes, with its separating comma; an absent one leaves the
//! document unchanged; `""` cannot be deleted (unchanged).
//!
//! `None` (the template function renders empty) for a document that is not valid JSON, a
//! pointer that is not a valid JSON Pointer, or (`raw=true`) a value that is not valid JSON.

/// Nesting limit of the scanner (the same as the JSON body parser's).
pub const MAX_DEPTH: usize = 128;

/// Parses a JSON Pointer into its unescaped tokens; `None` if it is not one.
pub fn parse_pointer(pointer: &str) -> Option<Vec<String>> {
    if pointer.is_empty() {
        return Some(Vec::new());
    }
    let rest = pointer.strip_prefix('/')?;
    rest.split('/')
        .map(|t| {
            let mut out = String::with_capacity(t.len());
            let mut chars = t.chars();
            while let Some(c) = chars.next() {
                match c {
                    '~' => match chars.next()? {
                        '0' => out.push('~'),
                        '1' => out.push('/'),
                        _ => return None,
                    },
                    c => out.push(c),
                }
            }
            Some(out)
        })
        .collect()
}

/// True when `text` is one valid JSON value (surrounding whitespace allowed).
pub fn is_valid_json(text: &str) -> bool {
    let mut s = Scanner::new(text.as_bytes(), &[], Op::Validate);
    s.document().is_ok()
}

/// `document` with the value at `pointer` set to `value_json` (a valid JSON text, inserted as
/// written, trimmed).
pub fn set(document: &str, pointer: &str, value_json: &str) -> Option<String> {
    let tokens = parse_pointer(pointer)?;
    let value = value_json.trim_matches(is_ws_char);
    if !is_valid_json(value) {
        return None;
    }
    edit(document, &tokens, Op::Set(value))
}

/// `document` without the value at `pointer`.
pub fn delete(document: &str, pointer: &str) -> Option<String> {
    let tokens = parse_pointer(pointer)?;
    edit(document, &tokens, Op::Delete)
}

fn edit(document: &str, tokens: &[String], op: Op<'_>) -> Option<String> {
    let mut s = Scanner::new(document.as_bytes(), tokens, op);
    s.document().ok()?;
    let Some((start, end, insert)) = s.found else {
        return Some(document.to_owned());
    };
    let mut out = String::with_capacity(document.len() - (end - start) + insert.len());
    out.push_str(&document[..start]);
    out.push_str(&insert);
    out.push_str(&document[end..]);
    Some(out)
}

#[derive(Debug, Clone, Copy)]
enum Op<'a> {
    Validate,
    Set(&'a str),
    Delete,
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

fn is_ws_char(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r')
}

struct Invalid;

/// A member or element seen while scanning a container: where it starts (key or value) and
/// where its value ends.
#[derive(Clone, Copy)]
struct Item {
    start: usize,
    value_start: usize,
    value_end: usize,
}

struct Scanner<'a> {
    b: &'a [u8],
    pos: usize,
    tokens: &'a [String],
    op: Op<'a>,
    /// The edit: replace `start..end` by the string.
    found: Option<(usize, usize, String)>,
}

impl<'a> Scanner<'a> {
    fn new(b: &'a [u8], tokens: &'a [String], op: Op<'a>) -> Scanner<'a> {
        Scanner {
            b,
            pos: 0,
            tokens,
            op,
            found: None,
        }
    }

    fn document(&mut self) -> Result<(), Invalid> {
        self.ws();
        let start = self.pos;
        let on_path = !matches!(self.op, Op::Validate);
        self.value(0, on_path.then_some(0))?;
        if let (true, Op::Set(v)) = (on_path && self.tokens.is_empty(), self.op) {
            self.found = Some((start, self.pos, v.to_owned()));
        }
        self.ws();
        if self.pos != self.b.len() {
            return Err(Invalid);
        }
        Ok(())
    }

    fn ws(&mut self) {
        while self.pos < self.b.len() && is_ws(self.b[self.pos]) {
            self.pos += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.pos).copied()
    }

    fn expect(&mut self, c: u8) -> Result<(), Invalid> {
        if self.peek() == Some(c) {
            self.pos += 1;
            Ok(())
        } else {
            Err(Invalid)
        }
    }

    /// Scans one value. `path` is `Some(i)` when this value is the one `tokens[..i]`
    /// addresses, so `tokens[i..]` remain to be resolved inside it.
    fn value(&mut self, depth: usize, path: Option<usize>) -> Result<(), Invalid> {
        match self.peek().ok_or(Invalid)? {
            b'{' => self.object(depth + 1, path),
            b'[' => self.array(depth + 1, path),
            b'"' => self.string().map(drop),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'-' | b'0'..=b'9' => self.number(),
            _ => Err(Invalid),
        }
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), Invalid> {
        if self.b[self.pos..].starts_with(word) {
            self.pos += word.len();
            Ok(())
        } else {
            Err(Invalid)
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.pos += 1;
        }
        self.pos - start
    }

    fn number(&mut self) -> Result<(), Invalid> {
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(Invalid),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if self.digits() == 0 {
                return Err(Invalid);
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.pos += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return Err(Invalid);
            }
        }
        Ok(())
    }

    /// Scans a string; returns its raw content (between the quotes) and whether it has escapes.
    fn string(&mut self) -> Result<(&'a str, bool), Invalid> {
        self.expect(b'"')?;
        let start = self.pos;
        let mut escaped = false;
        loop {
            let c = self.peek().ok_or(Invalid)?;
            match c {
                b'"' => break,
                b'\\' => {
                    escaped = true;
                    self.pos += 1;
                    match self.peek().ok_or(Invalid)? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.pos += 1,
                        b'u' => {
                            let hex = self.b.get(self.pos + 1..self.pos + 5).ok_or(Invalid)?;
                            if !hex.iter().all(u8::is_ascii_hexdigit) {
                                return Err(Invalid);
                            }
                            self.pos += 5;
                        }
                        _ => return Err(Invalid),
                    }
                }
                0x00..=0x1f => return Err(Invalid),
                _ => self.pos += 1,
            }
        }
        let raw = &self.b[start..self.pos];
        self.pos += 1;
        // The input is a &str and both ends are ASCII quotes: always valid UTF-8.
        let raw = std::str::from_utf8(raw).map_err(|_| Invalid)?;
        Ok((raw, escaped))
    }

    /// The token this container must resolve, when it is on the path.
    fn token(&self, path: Option<usize>) -> Option<(&'a str, bool)> {
        let i = path?;
        let tokens: &'a [String] = self.tokens;
        tokens.get(i).map(|t| (t.as_str(), i + 1 == tokens.len()))
    }

    fn object(&mut self, depth: usize, path: Option<usize>) -> Result<(), Invalid> {
        if depth > MAX_DEPTH {
            return Err(Invalid);
        }
        let open = self.pos;
        self.pos += 1;
        let token = self.token(path);
        let mut prev: Option<Item> = None;
        let mut hit: Option<(Option<Item>, Item)> = None;
        // A hit that was the first member: its removal runs to the next member's key.
        let mut first_hit_next: Option<usize> = None;
        let mut waiting_for_next = false;
        self.ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
        } else {
            loop {
                self.ws();
                let key_start = self.pos;
                if waiting_for_next {
                    first_hit_next = Some(key_start);
                    waiting_for_next = false;
                }
                let (raw, escaped) = self.string()?;
                self.ws();
                self.expect(b':')?;
                self.ws();
                let value_start = self.pos;
                let matches = match token {
                    Some((t, _)) if escaped => {
                        serde_json::from_str::<String>(&format!("\"{raw}\""))
                            .ok()
                            .as_deref()
                            == Some(t)
                    }
                    Some((t, _)) => raw == t,
                    None => false,
                };
                let inner = match (matches, token) {
                    (true, Some((_, false))) => path.map(|i| i + 1),
                    _ => None,
                };
                self.value(depth, inner)?;
                let item = Item {
                    start: key_start,
                    value_start,
                    value_end: self.pos,
                };
                if matches && token.is_some_and(|(_, last)| last) {
                    hit = Some((prev, item));
                    first_hit_next = None;
                    waiting_for_next = prev.is_none();
                }
                prev = Some(item);
                self.ws();
                match self.peek() {
                    Some(b',') => self.pos += 1,
                    Some(b'}') => {
                        self.pos += 1;
                        break;
                    }
                    _ => return Err(Invalid),
                }
            }
        }
        let Some((name, true)) = token else {
            return Ok(());
        };
        match (self.op, hit) {
            (Op::Set(v), Some((_, item))) => {
                self.found = Some((item.value_start, item.value_end, v.to_owned()));
            }
            (Op::Set(v), None) => {
                let key = serde_json::to_string(name).unwrap_or_default();
                self.found = Some(match prev {
                    Some(last) => (last.value_end, last.value_end, format!(",{key}:{v}")),
                    None => (open + 1, open + 1, format!("{key}:{v}")),
                });
            }
            (Op::Delete, Some((before, item))) => {
                self.found = Some(removal(before, item, first_hit_next));
            }
            _ => {}
        }
        Ok(())
    }

    fn array(&mut self, depth: usize, path: Option<usize>) -> Result<(), Invalid> {
        if depth > MAX_DEPTH {
            return Err(Invalid);
        }
        let open = self.pos;
        self.pos += 1;
        let token = self.token(path);
        let index = match token {
            Some(("-", _)) => Some(usize::MAX),
            Some((t, _)) if t == "0" || (!t.starts_with('0') && !t.is_empty()) => t.parse().ok(),
            _ => None,
        };
        let mut prev: Option<Item> = None;
        let mut hit: Option<(Option<Item>, Item)> = None;
        let mut next_after_hit: Option<usize> = None;
        let mut waiting_for_next = false;
        let mut len = 0usize;
        self.ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
        } else {
            loop {
                self.ws();
                let start = self.pos;
                if waiting_for_next {
                    next_after_hit = Some(start);
                    waiting_for_next = false;
                }
                let on_path = index == Some(len);
                let inner = match (on_path, token) {
                    (true, Some((_, false))) => path.map(|i| i + 1),
                    _ => None,
                };
                self.value(depth, inner)?;
                let item = Item {
                    start,
                    value_start: start,
                    value_end: self.pos,
                };
                if on_path && token.is_some_and(|(_, last)| last) {
                    hit = Some((prev, item));
                    waiting_for_next = prev.is_none();
                }
                prev = Some(item);
                len += 1;
                self.ws();
                match self.peek() {
                    Some(b',') => self.pos += 1,
                    Some(b']') => {
                        self.pos += 1;
                        break;
                    }
                    _ => return Err(Invalid),
                }
            }
        }
        let (Some((_, true)), Some(index)) = (token, index) else {
            return Ok(());
        };
        match (self.op, hit) {
            (Op::Set(v), Some((_, item))) => {
                self.found = Some((item.value_start, item.value_end, v.to_owned()));
            }
            (Op::Set(v), None) if index == len || index == usize::MAX => {
                self.found = Some(match prev {
                    Some(last) => (last.value_end, last.value_end, format!(",{v}")),
                    None => (open + 1, open + 1, v.to_owned()),
                });
            }
            (Op::Delete, Some((before, item))) => {
                self.found = Some(removal(before, item, next_after_hit));
            }
            _ => {}
        }
        Ok(())
    }
}

/// The range that removes `item` and one separating comma: from the end of the previous
/// value, or (for the first item) up to the start of the next one.
fn removal(before: Option<Item>, item: Item, next: Option<usize>) -> (usize, usize, String) {
    match (before, next) {
        (Some(before), _) => (before.value_end, item.value_end, String::new()),
        (None, Some(next)) => (item.start, next, String::new()),
        (None, None) => (item.start, item.value_end, String::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointers() {
        assert_eq!(parse_pointer(""), Some(vec![]));
        assert_eq!(parse_pointer("/"), Some(vec![String::new()]));
        assert_eq!(
            parse_pointer("/a~1b/c~0d/0"),
            Some(vec!["a/b".into(), "c~d".into(), "0".into()])
        );
        assert_eq!(parse_pointer("a"), None, "must start with /");
        assert_eq!(parse_pointer("/a~2"), None, "bad escape");
        assert_eq!(parse_pointer("/a~"), None, "dangling ~");
    }

    #[test]
    fn set_replaces_one_value_and_keeps_every_other_byte() {
        let doc = "{ \"model\" : \"gpt-4\",\n  \"n\": 1.50e+2, \"u\": \"\\u00e9\\ud83d\\ude00\",\n  \"nested\": {\"k\": [1, 2 , 3]} }\n";
        assert_eq!(
            set(doc, "/model", "\"gpt-4o-mini\"").unwrap(),
            doc.replace("\"gpt-4\"", "\"gpt-4o-mini\"")
        );
        assert_eq!(
            set(doc, "/nested/k/1", "{\"x\": null}").unwrap(),
            doc.replace("2 ,", "{\"x\": null} ,")
        );
        assert_eq!(set(doc, "", "7").unwrap(), "7\n", "the whole document");
        assert_eq!(set("  [1]  ", "", " true ").unwrap(), "  true  ");
    }

    #[test]
    fn set_appends_missing_members_and_elements() {
        assert_eq!(set("{}", "/a", "1").unwrap(), r#"{"a":1}"#);
        assert_eq!(set("{ }", "/a", "1").unwrap(), r#"{"a":1 }"#);
        assert_eq!(
            set(r#"{"b": 2}"#, "/a~1x", "\"v\"").unwrap(),
            r#"{"b": 2,"a/x":"v"}"#
        );
        assert_eq!(set("[1, 2]", "/2", "3").unwrap(), "[1, 2,3]");
        assert_eq!(set("[1, 2]", "/-", "3").unwrap(), "[1, 2,3]");
        assert_eq!(set("[]", "/-", "3").unwrap(), "[3]");
        assert_eq!(set("[]", "/0", "3").unwrap(), "[3]");
        assert_eq!(
            set(r#"{"a":"\""}"#, "/q", r#""\u0041""#).unwrap(),
            r#"{"a":"\"","q":"\u0041"}"#
        );
    }

    #[test]
    fn set_leaves_the_document_alone_when_the_parent_is_missing() {
        let doc = r#"{"a": {"b": 1}, "l": [0]}"#;
        for p in ["/x/y", "/a/b/c", "/l/5", "/l/01", "/l/x", "/l/-1", "/a/b/0"] {
            assert_eq!(set(doc, p, "1").unwrap(), doc, "{p}");
        }
    }

    #[test]
    fn duplicate_keys_address_the_last_one() {
        assert_eq!(
            set(r#"{"a":1,"a":2}"#, "/a", "3").unwrap(),
            r#"{"a":1,"a":3}"#
        );
        assert_eq!(delete(r#"{"a":1,"a":2}"#, "/a").unwrap(), r#"{"a":1}"#);
    }

    #[test]
    fn escaped_keys_are_compared_decoded() {
        assert_eq!(
            set(r#"{"m\u006fdel": "x"}"#, "/model", "\"y\"").unwrap(),
            r#"{"m\u006fdel": "y"}"#
        );
    }

    #[test]
    fn delete_takes_one_comma_with_it() {
        let doc = r#"{"a": 1, "b": 2, "c": 3}"#;
        assert_eq!(delete(doc, "/a").unwrap(), r#"{"b": 2, "c": 3}"#);
        assert_eq!(delete(doc, "/b").unwrap(), r#"{"a": 1, "c": 3}"#);
        assert_eq!(delete(doc, "/c").unwrap(), r#"{"a": 1, "b": 2}"#);
        assert_eq!(delete(r#"{ "a": 1 }"#, "/a").unwrap(), "{  }");
        assert_eq!(delete("[1, [2], 3]", "/0").unwrap(), "[[2], 3]");
        assert_eq!(delete("[1, [2], 3]", "/1/0").unwrap(), "[1, [], 3]");
        assert_eq!(delete("[1, [2], 3]", "/2").unwrap(), "[1, [2]]");
        assert_eq!(delete(doc, "/zz").unwrap(), doc, "absent: unchanged");
        assert_eq!(delete(doc, "").unwrap(), doc, "the root stays");
        assert_eq!(delete("[1]", "/-").unwrap(), "[1]");
        for d in [doc, "[1, [2], 3]"] {
            for p in ["/a", "/b", "/0", "/1"] {
                let out = delete(d, p).unwrap();
                assert!(is_valid_json(&out), "{d} {p} -> {out}");
            }
        }
    }

    #[test]
    fn invalid_input_gives_none() {
        for doc in [
            "",
            "{",
            "{\"a\":}",
            "[1,]",
            "{\"a\":1,}",
            "01",
            "1.",
            "-",
            "1e",
            "tru",
            "\"\\x\"",
            "\"a\nb\"",
            "{} x",
            "{\"a\" 1}",
            "[1 2]",
            "\"\\u12\"",
            "{1:2}",
        ] {
            assert_eq!(set(doc, "/a", "1"), None, "{doc:?}");
            assert!(!is_valid_json(doc), "{doc:?}");
        }
        assert_eq!(set("{}", "a", "1"), None, "bad pointer");
        assert_eq!(set("{}", "/a", "not json"), None, "bad value");
        assert_eq!(delete("{}", "~"), None);
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert_eq!(set(&deep, "/0", "1"), None, "too deep");
        let ok = format!("{}{}", "[".repeat(128), "]".repeat(128));
        assert!(is_valid_json(&ok));
        for doc in [
            "0",
            "-0.5e-3",
            "1E+9",
            "true",
            "null",
            "\"\\ud83d\\ude00\"",
            " {\"a\":[{}]} ",
        ] {
            assert!(is_valid_json(doc), "{doc}");
        }
    }

    #[test]
    fn agrees_with_serde_json_on_what_it_changed() {
        let doc = r#"{"model":"gpt-4","messages":[{"role":"user","content":"Hi \u00e9"}],"temperature":0.70,"stream":false}"#;
        let out = set(doc, "/messages/0/content", "\"changed\"").unwrap();
        let mut want: serde_json::Value = serde_json::from_str(doc).unwrap();
        want["messages"][0]["content"] = "changed".into();
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&out).unwrap(),
            want
        );
        assert!(
            out.contains("\"temperature\":0.70"),
            "number kept as written"
        );
    }
}
