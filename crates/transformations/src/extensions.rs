//! The functions this module adds beyond kgateway's (`regex_extract`, `query_param`,
//! `set_query_param`, `remove_query_param`, `json_set`, `json_delete`, `metadata`): their
//! registration in the template environment and what the compiler learns from their calls at
//! load time (literal regex patterns, which metadata to read, that `:path` is read).
//!
//! kgateway v2.3's own module does not know these names: a policy that uses them is answered
//! with a 400 there (an unknown function is an undeclared variable).

use std::borrow::Cow;
use std::collections::HashMap;

use minijinja::value::{Kwargs, Value};
use minijinja::{Environment, ErrorKind as JinjaErrorKind, State};

use crate::apply::MetadataSource;
use crate::error::{Error, ErrorKind};
use crate::json_edit;
use crate::pattern::{self, Group, Pattern};
use crate::query;
use crate::template::{Tok, Usage, data};

/// The names added here (all registered globals, so never "undeclared").
pub const NAMES: [&str; 7] = [
    "regex_extract",
    "query_param",
    "set_query_param",
    "remove_query_param",
    "json_set",
    "json_delete",
    "metadata",
];

/// One metadata value a template reads: decided at load time from the call's literals.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MetadataKey {
    pub source: MetadataSource,
    pub namespace: String,
    pub key: String,
}

/// What the compiler collects from these calls across a config.
#[derive(Debug, Default)]
pub(crate) struct Collected {
    pub literal_patterns: HashMap<String, Pattern>,
    pub metadata: Vec<MetadataKey>,
}

/// A value as text: strings as they are, none/undefined as empty, anything else printed.
fn text(v: &Value) -> Cow<'_, str> {
    if let Some(s) = v.as_str() {
        Cow::Borrowed(s)
    } else if v.is_undefined() || v.is_none() {
        Cow::Borrowed("")
    } else {
        Cow::Owned(v.to_string())
    }
}

fn invalid(message: impl Into<String>) -> minijinja::Error {
    minijinja::Error::new(JinjaErrorKind::InvalidOperation, message.into())
}

/// Registers the functions. `regex_extract` finds the patterns of the config being rendered
/// (the compiler installs its literal patterns when the config is finished).
pub(crate) fn register(env: &mut Environment<'static>) {
    env.add_function(
        "regex_extract",
        |state: &State,
         value: Value,
         pattern: &str,
         group: Option<Value>,
         kwargs: Kwargs|
         -> Result<String, minijinja::Error> {
            let group = match (group, kwargs.get::<Option<Value>>("group")?) {
                (Some(_), Some(_)) => return Err(invalid("regex_extract: group given twice")),
                (Some(g), None) | (None, Some(g)) => g,
                (None, None) => Value::from(0),
            };
            kwargs.assert_all_used()?;
            let group = if let Some(name) = group.as_str() {
                Group::Name(name)
            } else {
                match i64::try_from(group.clone()).ok().map(usize::try_from) {
                    Some(Ok(i)) => Group::Index(i),
                    // A negative or non-integer group matches nothing, like an absent one.
                    _ => return Ok(String::new()),
                }
            };
            let value = text(&value);
            let Some(config) = crate::template::config_state(state) else {
                return Ok(String::new());
            };
            minijinja::budget::charge(value.len())?;
            match config.patterns.with(pattern, |p| {
                pattern::extract(p, &value, &group, config.regex_work)
            }) {
                None => Ok(String::new()),
                Some(Ok(extracted)) => Ok(extracted),
                Some(Err(over)) => Err(minijinja::Error::new(
                    JinjaErrorKind::OutOfFuel,
                    format!(
                        "regex_extract: extracting a group from a {}-byte match would take {} \
                         units of work, over the {} allowed per call ({})",
                        over.match_len,
                        over.units,
                        over.limit,
                        crate::template::RENDER_TIME_ENV
                    ),
                )),
            }
        },
    );
    env.add_function("query_param", |state: &State, name: &str| -> String {
        data(state)
            .and_then(|d| {
                d.request_headers
                    .get(":path")
                    .map(|p| query::query_param(&p, name))
            })
            .unwrap_or_default()
    });
    env.add_function(
        "set_query_param",
        |path: &str, name: &str, value: Value| -> Result<String, minijinja::Error> {
            let value = text(&value);
            // Percent-encoding triples a byte at most.
            minijinja::budget::charge(
                path.len()
                    .saturating_add(name.len().saturating_mul(3))
                    .saturating_add(value.len().saturating_mul(3)),
            )?;
            Ok(query::set_query_param(path, name, &value))
        },
    );
    env.add_function(
        "remove_query_param",
        |path: &str, name: &str| -> Result<String, minijinja::Error> {
            minijinja::budget::charge(path.len())?;
            Ok(query::remove_query_param(path, name))
        },
    );
    env.add_function(
        "json_set",
        |document: Value,
         pointer: &str,
         value: Value,
         kwargs: Kwargs|
         -> Result<String, minijinja::Error> {
            let raw = kwargs.get::<Option<bool>>("raw")?.unwrap_or(false);
            kwargs.assert_all_used()?;
            let value = text(&value);
            let document = text(&document);
            // The value (escaped: 6 bytes a byte at most) and the edited document.
            minijinja::budget::charge(
                document
                    .len()
                    .saturating_add(value.len().saturating_mul(if raw { 1 } else { 6 })),
            )?;
            let json = if raw {
                value.into_owned()
            } else {
                serde_json::Value::String(value.into_owned()).to_string()
            };
            Ok(json_edit::set(&document, pointer, &json).unwrap_or_default())
        },
    );
    env.add_function(
        "json_delete",
        |document: Value, pointer: &str| -> Result<String, minijinja::Error> {
            let document = text(&document);
            minijinja::budget::charge(document.len())?;
            Ok(json_edit::delete(&document, pointer).unwrap_or_default())
        },
    );
    env.add_function(
        "metadata",
        |state: &State,
         namespace: &str,
         key: &str,
         source: Option<&str>,
         kwargs: Kwargs|
         -> Result<String, minijinja::Error> {
            let source = match (source, kwargs.get::<Option<&str>>("source")?) {
                (Some(s), None) | (None, Some(s)) => s,
                (None, None) => "dynamic",
                (Some(_), Some(_)) => return Err(invalid("metadata: source given twice")),
            };
            kwargs.assert_all_used()?;
            let source = MetadataSource::from_name(source)
                .ok_or_else(|| invalid(format!("metadata: unknown source {source:?}")))?;
            Ok(data(state)
                .and_then(|d| d.metadata_value(source, namespace, key).map(str::to_owned))
                .unwrap_or_default())
        },
    );
}

/// The arguments of the call whose `(` is at `open`: token slices split at top-level commas.
fn call_args<'t, 'a>(tokens: &'t [Tok<'a>], open: usize) -> Vec<&'t [Tok<'a>]> {
    let mut args = Vec::new();
    let mut depth = 0usize;
    let mut start = open + 1;
    for (i, tok) in tokens.iter().enumerate().skip(open) {
        match tok {
            Tok::Punct('(' | '[' | '{') => depth += 1,
            Tok::Punct(')' | ']' | '}') => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    if i > start {
                        args.push(&tokens[start..i]);
                    }
                    return args;
                }
            }
            Tok::Punct(',') if depth == 1 => {
                args.push(&tokens[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    args
}

/// `name=...` as (name, value tokens).
fn kwarg<'t, 'a>(arg: &'t [Tok<'a>]) -> Option<(&'a str, &'t [Tok<'a>])> {
    match arg {
        [Tok::Ident(name), Tok::Punct('='), rest @ ..]
            if rest.first() != Some(&Tok::Punct('=')) =>
        {
            Some((name, rest))
        }
        _ => None,
    }
}

/// A string literal argument, unescaped; `None` when the argument is anything else, or uses
/// an escape this reader does not decode (`\u`, `\x`, octal).
fn literal(arg: &[Tok<'_>]) -> Option<String> {
    match arg {
        [Tok::Str(Some(s))] => Some((*s).to_owned()),
        [Tok::EscStr(raw)] => unescape(raw),
        _ => None,
    }
}

fn unescape(raw: &str) -> Option<String> {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        out.push(match chars.next()? {
            c @ ('"' | '\\' | '/' | '\'') => c,
            'b' => '\x08',
            'f' => '\x0C',
            'n' => '\n',
            'r' => '\r',
            't' => '\t',
            _ => return None,
        });
    }
    Some(out)
}

/// Learns from the calls in one value's tokens: compiles literal `regex_extract` patterns
/// (an invalid one is a config error at `field`), records the metadata the value reads (its
/// arguments must be string literals) and that `query_param` reads `:path`.
pub(crate) fn analyse(
    tokens: &[Tok<'_>],
    calls: &[usize],
    field: &str,
    usage: &mut Usage,
    collected: &mut Collected,
) -> Result<(), Error> {
    let err = |msg: String| Error::new(ErrorKind::Template, msg).at(field);
    for &i in calls {
        let Tok::Ident(name) = tokens[i] else {
            continue;
        };
        match name {
            "query_param" => usage.request_header_fn.add(":path"),
            "regex_extract" => {
                let args = call_args(tokens, i + 1);
                if let Some(pattern) = args.get(1).and_then(|a| literal(a))
                    && let std::collections::hash_map::Entry::Vacant(slot) =
                        collected.literal_patterns.entry(pattern)
                {
                    let re = pattern::compile(slot.key()).map_err(|e| {
                        err(format!(
                            "regex_extract: invalid pattern {:?}: {}",
                            slot.key(),
                            pattern::describe(&e)
                        ))
                    })?;
                    slot.insert(re);
                }
            }
            "metadata" => {
                let args = call_args(tokens, i + 1);
                let usage_hint = "metadata(namespace, key[, source]) takes string literals \
                                  (the values to read are decided when the config loads)";
                let mut positional = Vec::new();
                let mut source = None;
                for arg in &args {
                    match kwarg(arg) {
                        Some(("source", v)) => {
                            source = Some(literal(v).ok_or_else(|| err(usage_hint.into()))?)
                        }
                        Some((other, _)) => {
                            return Err(err(format!("metadata: unknown argument {other:?}")));
                        }
                        None => {
                            positional.push(literal(arg).ok_or_else(|| err(usage_hint.into()))?)
                        }
                    }
                }
                let (namespace, key, source) = match (positional.as_slice(), source) {
                    ([ns, key], s) => (ns, key, s.unwrap_or_else(|| "dynamic".into())),
                    ([ns, key, s], None) => (ns, key, s.clone()),
                    _ => return Err(err(usage_hint.into())),
                };
                let source = MetadataSource::from_name(&source).ok_or_else(|| {
                    err(format!(
                        "metadata: unknown source {source:?} (dynamic, route, cluster, host)"
                    ))
                })?;
                let mk = MetadataKey {
                    source,
                    namespace: namespace.clone(),
                    key: key.clone(),
                };
                let index = match collected.metadata.iter().position(|m| *m == mk) {
                    Some(index) => index,
                    None => {
                        collected.metadata.push(mk);
                        collected.metadata.len() - 1
                    }
                };
                usage.metadata.insert(index);
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(src: &str) -> Vec<Tok<'_>> {
        let mut out = Vec::new();
        crate::template::tokenize(src, &mut out);
        out
    }

    #[test]
    fn splits_call_arguments_at_top_level_commas() {
        let t = toks(r#"f(a(1, 2), "x,y", [3, 4], k=5)"#);
        let args = call_args(&t, 1);
        assert_eq!(args.len(), 4);
        assert_eq!(literal(args[1]).as_deref(), Some("x,y"));
        assert_eq!(kwarg(args[3]).map(|(k, _)| k), Some("k"));
        assert!(kwarg(&toks("a == b")).is_none());
        assert!(call_args(&toks("f()"), 1).is_empty());
    }

    #[test]
    fn unescapes_what_jinja_unescapes_or_gives_up() {
        assert_eq!(literal(&toks(r#""a\\d\"\n""#)).as_deref(), Some("a\\d\"\n"));
        assert_eq!(literal(&toks(r#""\u0041""#)), None);
        assert_eq!(literal(&toks(r#""a" ~ "b""#)), None);
    }
}
