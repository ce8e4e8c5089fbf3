//! The functions this module adds beyond kgateway's (`regex_extract`, `query_param`,
//! `set_query_param`, `remove_query_param`, `json_set`, `json_delete`, `metadata`): their
//! registration in the template environment and what the compiler learns from their calls at
//! load time (literal regex patterns, which metadata to read, that `:path` is read), read from
//! the parse tree's call nodes.
//!
//! kgateway v2.3's own module does not know these names: a policy that uses them is answered
//! with a 400 there (an unknown function is an undeclared variable).

use std::borrow::Cow;
use std::collections::HashMap;

use minijinja::value::{Kwargs, Value};
use minijinja::{Environment, ErrorKind as JinjaErrorKind, State};

use minijinja::machinery::ast;

use crate::json_edit;
pub use crate::message::MetadataKey;
use crate::message::MetadataSource;
use crate::pattern::{self, Group, Pattern};
use crate::query;

use super::context::{config_state, data};
use super::limits::RENDER_TIME_ENV;

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
            let Some(config) = config_state(state) else {
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
                        over.match_len, over.units, over.limit, RENDER_TIME_ENV
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

/// What one call of these functions tells the compiler at load time, in the template's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CallFact {
    /// `regex_extract` with its pattern written as a string literal: compiled when the config
    /// loads (an invalid one rejects it).
    LiteralPattern(String),
    /// `metadata(...)`: the one value it reads (boxed: the list lives with the template).
    Metadata(Box<MetadataKey>),
    /// A call the config must not load with; the message says why.
    Invalid(String),
}

/// The request header a call of `function` reads (`query_param` reads `:path`).
pub(crate) fn request_header_read(function: &str) -> Option<&'static str> {
    (function == "query_param").then_some(":path")
}

/// Learns from one call of `function` (one of [`NAMES`]) with `args`: the literal pattern of a
/// `regex_extract`, the value a `metadata` reads (its arguments must be string literals).
pub(crate) fn analyse_call(function: &str, args: &[ast::CallArg<'_>], facts: &mut Vec<CallFact>) {
    match function {
        "regex_extract" => {
            if let Some(ast::CallArg::Pos(pattern)) = args.get(1)
                && let Some(pattern) = literal(pattern)
            {
                facts.push(CallFact::LiteralPattern(pattern.to_owned()));
            }
        }
        "metadata" => facts.push(match metadata_key(args) {
            Ok(key) => CallFact::Metadata(Box::new(key)),
            Err(message) => CallFact::Invalid(message),
        }),
        _ => {}
    }
}

/// A string literal argument (the parser has already joined adjacent literals and decoded
/// escapes); `None` for any other expression.
fn literal<'a>(arg: &'a ast::Expr<'_>) -> Option<&'a str> {
    match arg {
        ast::Expr::Const(c) => c.value.as_str(),
        _ => None,
    }
}

/// The value `metadata(namespace, key[, source])` reads, or why the call cannot load.
fn metadata_key(args: &[ast::CallArg<'_>]) -> Result<MetadataKey, String> {
    let usage_hint = || {
        "metadata(namespace, key[, source]) takes string literals \
         (the values to read are decided when the config loads)"
            .to_owned()
    };
    let mut positional = Vec::new();
    let mut source = None;
    for arg in args {
        match arg {
            ast::CallArg::Kwarg("source", v) => source = Some(literal(v).ok_or_else(usage_hint)?),
            ast::CallArg::Kwarg(other, _) => {
                return Err(format!("metadata: unknown argument {other:?}"));
            }
            ast::CallArg::Pos(v) => positional.push(literal(v).ok_or_else(usage_hint)?),
            ast::CallArg::PosSplat(_) | ast::CallArg::KwargSplat(_) => return Err(usage_hint()),
        }
    }
    let (namespace, key, source) = match (positional.as_slice(), source) {
        ([ns, key], s) => (*ns, *key, s.unwrap_or("dynamic")),
        ([ns, key, s], None) => (*ns, *key, *s),
        _ => return Err(usage_hint()),
    };
    let source = MetadataSource::from_name(source).ok_or_else(|| {
        format!("metadata: unknown source {source:?} (dynamic, route, cluster, host)")
    })?;
    Ok(MetadataKey {
        source,
        namespace: namespace.to_owned(),
        key: key.to_owned(),
    })
}

/// Compiles a literal `regex_extract` pattern into the config's table, once per pattern.
pub(crate) fn compile_literal_pattern(
    pattern: &str,
    patterns: &mut HashMap<String, Pattern>,
) -> Result<(), String> {
    if patterns.contains_key(pattern) {
        return Ok(());
    }
    let re = pattern::compile(pattern).map_err(|e| {
        format!(
            "regex_extract: invalid pattern {pattern:?}: {}",
            pattern::describe(&e)
        )
    })?;
    patterns.insert(pattern.to_owned(), re);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(source: &str) -> Vec<CallFact> {
        super::super::analysis::of_source(source)
            .expect("parses")
            .extension_calls
    }

    #[test]
    fn splits_call_arguments_at_top_level_commas() {
        assert_eq!(
            facts(r#"{{ regex_extract(a(1, 2), "x,y", [3, 4], group=5) }}"#),
            [CallFact::LiteralPattern("x,y".to_owned())]
        );
        assert_eq!(facts("{{ regex_extract() }}{{ regex_extract(v) }}"), []);
        assert_eq!(
            facts(r#"{{ metadata("ns", "k", source="route") }}"#),
            [CallFact::Metadata(Box::new(MetadataKey {
                source: MetadataSource::Route,
                namespace: "ns".to_owned(),
                key: "k".to_owned(),
            }))]
        );
    }

    #[test]
    fn unescapes_what_jinja_unescapes_or_gives_up() {
        assert_eq!(
            facts(r#"{{ regex_extract(v, "a\\d\"\n") }}"#),
            [CallFact::LiteralPattern("a\\d\"\n".to_owned())]
        );
        assert_eq!(
            facts(r#"{{ regex_extract(v, "\u0041") }}"#),
            [CallFact::LiteralPattern("A".to_owned())]
        );
        assert_eq!(facts(r#"{{ regex_extract(v, "a" ~ "b") }}"#), []);
        assert!(matches!(
            &facts(r#"{{ metadata("a" ~ "b", "k") }}"#)[..],
            [CallFact::Invalid(_)]
        ));
    }
}
