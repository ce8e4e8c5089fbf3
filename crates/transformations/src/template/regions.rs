//! Where a value's Jinja markup is and where its text is, as MiniJinja's own lexer sees it.
//!
//! Command operators (`%REQ(x)%`) live in the text parts and must be rewritten before the
//! template compiles, so this split comes before the one parse of the compile: it runs the
//! lexer only (no parse). The same pass tells whether every piece of markup is a lone
//! `{{ header("x") }}` or `{{ request_header("x") }}`, which then compiles to header operators
//! without a template at all.

use minijinja::machinery::{Token, WhitespaceConfig, tokenize};
use minijinja::syntax::SyntaxConfig;

/// One piece of a value, as byte ranges into it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Region {
    /// Text the template engine prints as it is: where operators are resolved.
    Text(std::ops::Range<usize>),
    /// Markup (`{{ }}`, `{% %}`, a comment, a `{% raw %}` block), kept verbatim.
    Jinja {
        range: std::ops::Range<usize>,
        /// `Some` when the markup is exactly `{{ header("x") }}` or `{{ request_header("x") }}`.
        header_call: Option<HeaderCall>,
    },
}

/// A plain `{{ header("x") }}` or `{{ request_header("x") }}`: no whitespace control, no filter,
/// one string literal without escapes or quotes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HeaderCall {
    /// True for `request_header`, false for `header`.
    pub request: bool,
    pub name: String,
}

/// Whether `value` holds any markup: `{{`, `{%` or `{#`, the markers MiniJinja's lexer starts
/// markup at (anywhere, even inside what would be text). Without one the lexer would give back
/// the whole value as text, so it is not run.
pub(crate) fn has_markup(value: &str) -> bool {
    memchr::memchr_iter(b'{', value.as_bytes())
        .any(|i| matches!(value.as_bytes().get(i + 1), Some(b'{' | b'%' | b'#')))
}

/// Whether every piece of markup of `value` could be a lone `{{ header("x") }}` or
/// `{{ request_header("x") }}`: a quick test before the lexer pass that decides it.
pub(crate) fn may_be_header_calls(value: &str) -> bool {
    value.contains("header") && !value.contains("{%") && !value.contains("{#")
}

/// The value's pieces, in order; whitespace-only stretches between markup are text, so a value
/// without markup is one text region (or none when empty).
pub(crate) fn split(value: &str) -> Vec<Region> {
    let mut out = Splitter {
        value,
        out: Vec::new(),
        done: 0,
    };
    // The markup being read: where it started and how far it matches a header call.
    let mut open: Option<(usize, CallMatch)> = None;
    let mut failed = false;
    for token in tokenize(value, false, SyntaxConfig, WhitespaceConfig::default()) {
        let Ok((token, span)) = token else {
            // The compile reports the syntax error; from here on nothing is text.
            failed = true;
            break;
        };
        let (start, end) = (span.start_offset as usize, span.end_offset as usize);
        match token {
            Token::TemplateData(_) if open.is_none() => {
                // The lexer shows a `{% raw %}` block's content as text too; it is markup,
                // printed without resolving operators.
                if !closes_raw(&value[end..]) {
                    out.gap(start);
                    out.text(start, end);
                }
            }
            Token::VariableStart | Token::BlockStart => {
                out.gap(start);
                let plain = matches!(token, Token::VariableStart) && &value[start..end] == "{{";
                open = Some((
                    start,
                    if plain {
                        CallMatch::Start
                    } else {
                        CallMatch::No
                    },
                ));
            }
            Token::VariableEnd | Token::BlockEnd => {
                let Some((from, call)) = open.take() else {
                    failed = true;
                    break;
                };
                let plain = &value[start..end] == "}}";
                let header_call = match call {
                    CallMatch::Closed(call) if plain => Some(call),
                    _ => None,
                };
                out.jinja(from, end, header_call);
            }
            token => {
                if let Some((_, call)) = &mut open {
                    *call = std::mem::replace(call, CallMatch::No).next(&token);
                }
            }
        }
    }
    match open {
        Some((from, _)) => {
            out.gap(from);
            out.jinja(from, value.len(), None);
        }
        None if failed => {
            if out.done < value.len() {
                out.jinja(out.done, value.len(), None);
            }
        }
        // What the lexer left (the trailing newline it drops) is text.
        None => out.gap(value.len()),
    }
    out.out
}

/// Builds the region list, covering every byte of the value once.
struct Splitter<'a> {
    value: &'a str,
    out: Vec<Region>,
    /// Where the part not yet in `out` starts.
    done: usize,
}

impl Splitter<'_> {
    /// What lies between the last region and `to`: markup the lexer passes over without a
    /// token (a comment, a raw block with its tags), or the whitespace a `-` marker or the
    /// dropped trailing newline leaves outside the tokens, which is text.
    fn gap(&mut self, to: usize) {
        if self.done >= to {
            return;
        }
        if self.value[self.done..to].trim_start().is_empty() {
            self.text(self.done, to);
        } else {
            self.jinja(self.done, to, None);
        }
    }

    fn text(&mut self, from: usize, to: usize) {
        match self.out.last_mut() {
            Some(Region::Text(range)) if range.end == from => range.end = to,
            _ => self.out.push(Region::Text(from..to)),
        }
        self.done = to;
    }

    fn jinja(&mut self, from: usize, to: usize, header_call: Option<HeaderCall>) {
        self.out.push(Region::Jinja {
            range: from..to,
            header_call,
        });
        self.done = to;
    }
}

/// How far the tokens of one `{{ }}` match `header("x")` or `request_header("x")`.
enum CallMatch {
    No,
    Start,
    Function { request: bool },
    Open { request: bool },
    Name(HeaderCall),
    Closed(HeaderCall),
}

impl CallMatch {
    fn next(self, token: &Token<'_>) -> CallMatch {
        match (self, token) {
            (CallMatch::Start, Token::Ident("header")) => CallMatch::Function { request: false },
            (CallMatch::Start, Token::Ident("request_header")) => {
                CallMatch::Function { request: true }
            }
            (CallMatch::Function { request }, Token::ParenOpen) => CallMatch::Open { request },
            // A literal with escapes is `Token::String`, never taken.
            (CallMatch::Open { request }, Token::Str(name))
                if !name.is_empty() && !name.contains(['"', '\'']) =>
            {
                CallMatch::Name(HeaderCall {
                    request,
                    name: (*name).to_owned(),
                })
            }
            (CallMatch::Name(call), Token::ParenClose) => CallMatch::Closed(call),
            _ => CallMatch::No,
        }
    }
}

/// Whether `rest` starts with `{% endraw %}` (any whitespace control): the text before it was
/// the content of a raw block. The lexer gives no token for the `raw` and `endraw` tags, only
/// the content as text; the closing tag right after it is what sets a raw block apart, since
/// anywhere else `{% endraw %}` does not compile.
fn closes_raw(rest: &str) -> bool {
    let Some(tag) = rest.strip_prefix("{%") else {
        return false;
    };
    let tag = tag.strip_prefix(['-', '+']).unwrap_or(tag).trim_start();
    let Some(tag) = tag.strip_prefix("endraw") else {
        return false;
    };
    let tag = tag.trim_start();
    let tag = tag.strip_prefix(['-', '+']).unwrap_or(tag);
    tag.starts_with("%}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The regions as (is text, source) pairs.
    fn pieces(value: &str) -> Vec<(bool, &str)> {
        split(value)
            .into_iter()
            .map(|r| match r {
                Region::Text(range) => (true, &value[range]),
                Region::Jinja { range, .. } => (false, &value[range]),
            })
            .collect()
    }

    #[test]
    fn regions() {
        assert_eq!(pieces("plain"), vec![(true, "plain")]);
        assert_eq!(pieces(""), vec![]);
        assert_eq!(
            pieces("a{{ b }}c{% if x %}d{% endif %}{# c #}"),
            vec![
                (true, "a"),
                (false, "{{ b }}"),
                (true, "c"),
                (false, "{% if x %}"),
                (true, "d"),
                (false, "{% endif %}"),
                (false, "{# c #}"),
            ]
        );
        assert_eq!(
            pieces(r#"{{ "}}" }}x"#),
            vec![(false, r#"{{ "}}" }}"#), (true, "x")]
        );
        assert_eq!(
            pieces("{% raw %}%REQ(x)% {{ y }}{% endraw %}z"),
            vec![
                (false, "{% raw %}%REQ(x)% {{ y }}{% endraw %}"),
                (true, "z")
            ]
        );
        assert_eq!(pieces("{"), vec![(true, "{")]);
        assert_eq!(pieces("{{ open"), vec![(false, "{{ open")]);
        assert_eq!(
            pieces("{{ 'open }} %REQ(a)%"),
            vec![(false, "{{ 'open }} %REQ(a)%")]
        );
        assert_eq!(pieces("a\n"), vec![(true, "a\n")]);
    }

    #[test]
    fn whitespace_a_marker_trims_stays_text_beside_the_markup() {
        assert_eq!(
            pieces("a  {{- b -}}  c"),
            vec![(true, "a  "), (false, "{{- b -}}"), (true, "  c")]
        );
        assert_eq!(
            pieces("{%- raw -%} x {%- endraw -%}y"),
            vec![(false, "{%- raw -%} x {%- endraw -%}"), (true, "y")]
        );
    }

    #[test]
    fn a_dict_literal_closing_braces_do_not_end_the_markup() {
        assert_eq!(
            pieces("{{ {'a': {'b': 1}} }}%REQ(x)%"),
            vec![(false, "{{ {'a': {'b': 1}} }}"), (true, "%REQ(x)%")]
        );
    }

    #[test]
    fn plain_header_calls_are_recognised_by_their_tokens() {
        let calls = |value: &str| -> Vec<Option<(bool, String)>> {
            split(value)
                .into_iter()
                .filter_map(|r| match r {
                    Region::Jinja { header_call, .. } => {
                        Some(header_call.map(|c| (c.request, c.name)))
                    }
                    Region::Text(_) => None,
                })
                .collect()
        };
        assert_eq!(
            calls(r#"{{ header("X-A") }}{{request_header('b')}}"#),
            vec![
                Some((false, "X-A".to_owned())),
                Some((true, "b".to_owned()))
            ]
        );
        for other in [
            "{{- header('a') }}",
            "{{ header('a') -}}",
            "{{ header('a') | upper }}",
            "{{ header(name) }}",
            "{{ header('a' ~ 'b') }}",
            "{{ header('a\\'b') }}",
            "{{ header('') }}",
            "{{ env('a') }}",
            "{% if header('a') %}{% endif %}",
            "{# {{ header('a') }} #}",
        ] {
            assert!(calls(other).iter().all(Option::is_none), "{other}");
        }
    }

    #[test]
    fn a_value_has_markup_exactly_when_the_lexer_finds_some() {
        for value in [
            "plain",
            "a { b",
            "{",
            "}}",
            "%}",
            "{{ x }}",
            "a{%",
            "{# c",
            "x{#",
            "{ {",
            "{{",
            "%REQ(a)% {% raw %}{{{% endraw %}",
            "é{é{{",
        ] {
            let lexed = split(value)
                .iter()
                .any(|r| matches!(r, Region::Jinja { .. }));
            assert_eq!(has_markup(value), lexed, "{value:?}");
        }
    }
}
