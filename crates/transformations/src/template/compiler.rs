//! Compiling values, once, at config time ([`Compiler`], [`Compiled`]).
//!
//! A value is one of:
//! - empty;
//! - a literal (no Jinja markup, no operator): kept as text and never rendered;
//! - operators and literal text only: concatenated per request, no template engine involved;
//! - a MiniJinja template: every operator in its *text* parts is rewritten at config time into
//!   a call of a hidden function, so the template is still compiled exactly once. Operators
//!   inside `{{ }}` / `{% %}` (e.g. in a string literal) are left to Jinja untouched: use
//!   `request_header()` there.

use std::sync::Arc;

use minijinja::Environment;

use crate::error::{Error, ErrorKind, TemplatePosition};
use crate::operators::{self, Operator, OperatorKind, Segment};
use crate::pattern::Patterns;

use super::compiled::{Compiled, strip_trailing_newline};
use super::context::{ConfigState, OP_FN, shared_config_state};
use super::engine::Engine;
use super::environment::shared_environment;
use super::extensions::{self, CallFact};
use super::limits::{EnvLookup, Limits, Options, metered};
use super::owned_template::{CompileError, OwnedTemplate, Read};
use super::regions::{self, Region};
use super::usage::Usage;

/// The position of a syntax error in `value` as the user wrote it. Operators in text parts
/// are plain text to the template engine, so the value compiles to the same error at the same
/// place without the rewriting the real compile does.
fn template_error_position(value: &str, limits: &Limits) -> Option<TemplatePosition> {
    let env = Environment::new();
    let (result, _) = metered(limits.meter(), || env.template_from_str(value).err());
    let err = result?;
    let line = err.line()?;
    let column = match err.range() {
        Some(range) if range.start <= value.len() && value.is_char_boundary(range.start) => {
            let before = &value[..range.start];
            let line_start = before.rfind('\n').map_or(0, |i| i + 1);
            before[line_start..].chars().count() + 1
        }
        _ => 1,
    };
    Some(TemplatePosition { line, column })
}

/// Builds the template environment while values are compiled.
pub(crate) struct Compiler {
    env: Arc<Environment<'static>>,
    env_lookup: EnvLookup,
    ops: Vec<Operator>,
    limits: Limits,
    collected: extensions::Collected,
    /// `Some(response_phase)` where a value made only of text and `{{ header("x") }}` /
    /// `{{ request_header("x") }}` may be compiled to header operators instead of a template:
    /// the same output without running the template engine per request. `None` where JSON
    /// body keys could shadow those functions (`parseAs: AsJson`).
    pub lower_header_calls: Option<bool>,
}

/// What, besides a value's text and field, decides how the compiler compiles it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct CompilerMode {
    /// The fuel picks the shared environment; the rest bounds constant folding.
    limits: Limits,
    lower_header_calls: Option<bool>,
}

impl Compiler {
    pub(crate) fn mode(&self) -> CompilerMode {
        CompilerMode {
            limits: self.limits,
            lower_header_calls: self.lower_header_calls,
        }
    }

    /// How many command operators the config's templates call so far.
    pub(crate) fn operator_count(&self) -> usize {
        self.ops.len()
    }

    pub fn new(options: &Options) -> Compiler {
        let env = shared_environment(options.limits.fuel);
        Compiler {
            env,
            env_lookup: options.env.clone(),
            ops: Vec::new(),
            limits: options.limits,
            collected: extensions::Collected::default(),
            lower_header_calls: None,
        }
    }

    /// Compiles `value`; `field` (e.g. `response.set[1].value`) names it in errors and is its
    /// template name, so it must be unique.
    pub fn compile(
        &mut self,
        value: &str,
        field: &str,
        usage: &mut Usage,
    ) -> Result<Compiled, Error> {
        if value.is_empty() {
            return Ok(Compiled::Empty);
        }
        let op_err = |msg: String| Error::new(ErrorKind::Operator, msg).at(field);
        if !regions::has_markup(value) {
            let segments = operators::parse(value).map_err(op_err)?;
            if !segments.iter().any(|s| matches!(s, Segment::Op(_))) {
                let text: String = segments
                    .into_iter()
                    .map(|s| match s {
                        Segment::Literal(l) => l,
                        Segment::Op(_) => String::new(),
                    })
                    .collect();
                return Ok(Compiled::Literal(strip_trailing_newline(&text).into()));
            }
            return Ok(Compiled::ops(segments, usage));
        }

        // The lexer pass finds the text parts (where operators are rewritten) and the header
        // calls that lower to operators; a value with neither compiles as it is written.
        let may_lower = self.lower_header_calls.is_some() && regions::may_be_header_calls(value);
        let mut source = String::new();
        if may_lower || operators::may_contain(value) {
            let regions = regions::split(value);
            if let Some(response_phase) = self.lower_header_calls
                && let Some(segments) = lower_header_calls(value, &regions, response_phase)
            {
                return Ok(Compiled::ops(segments.map_err(op_err)?, usage));
            }
            source.reserve(value.len() + 16);
            for region in &regions {
                match region {
                    Region::Text(range) => {
                        for seg in operators::parse(&value[range.clone()]).map_err(op_err)? {
                            match seg {
                                Segment::Literal(l) => source.push_str(&l),
                                Segment::Op(op) => {
                                    usage.record_op(&op);
                                    source.push_str(&format!(
                                        "{{{{ {OP_FN}({}) }}}}",
                                        self.ops.len()
                                    ));
                                    self.ops.push(op);
                                }
                            }
                        }
                    }
                    Region::Jinja { range, .. } => source.push_str(&value[range.clone()]),
                }
            }
        } else {
            source.push_str(value);
        }
        source.shrink_to_fit();
        let template =
            OwnedTemplate::compile(self.env.clone(), field.to_owned(), source, &self.limits)
                .map_err(|e| match e {
                    CompileError::Template(e) => Error::new(ErrorKind::Template, e.to_string())
                        .at(field)
                        .with_position(template_error_position(value, &self.limits)),
                    CompileError::Budget(message) => Error::new(
                        ErrorKind::Template,
                        format!("a constant expression exceeds the render budget: {message}"),
                    )
                    .at(field),
                })?;
        let reads = template.reads();
        let has = |n: &str| {
            reads
                .variables
                .binary_search_by(|v| v.as_str().cmp(n))
                .is_ok()
        };
        if has("body") || has("context") {
            usage.body = true;
        }
        // What can read the JSON body as a whole, not only the keys named: then it is all
        // converted.
        if has("context") || has("debug") || reads.pulls_in_templates {
            usage.whole_json = true;
        }
        usage.json_names.extend(reads.variables.iter().cloned());
        if reads.calls_operators {
            usage.json_names.insert(OP_FN.to_owned());
        }
        // An unknown function is an undeclared name like a JSON variable: kgateway loads such a
        // template and answers its requests as it does for a missing JSON variable.
        self.learn_from_reads(&reads.reads, field, usage)?;
        Ok(Compiled::Template { template })
    }

    /// Records the headers a template reads, compiles the literal patterns of its
    /// `regex_extract` calls (an invalid one is a config error at `field`) and records the
    /// metadata its `metadata` calls read.
    fn learn_from_reads(
        &mut self,
        reads: &[Read],
        field: &str,
        usage: &mut Usage,
    ) -> Result<(), Error> {
        let err = |msg: String| Error::new(ErrorKind::Template, msg).at(field);
        for read in reads {
            match read {
                Read::Header(name) => usage.header_fn.add(name),
                Read::RequestHeader(name) => usage.request_header_fn.add(name),
                Read::EveryHeader => usage.header_fn.set_all(),
                Read::EveryRequestHeader => usage.request_header_fn.set_all(),
                Read::Call(CallFact::LiteralPattern(pattern)) => {
                    extensions::compile_literal_pattern(
                        pattern,
                        &mut self.collected.literal_patterns,
                    )
                    .map_err(err)?
                }
                Read::Call(CallFact::Metadata(key)) => {
                    let metadata = &mut self.collected.metadata;
                    let index = match metadata.iter().position(|m| m == &**key) {
                        Some(index) => index,
                        None => {
                            metadata.push((**key).clone());
                            metadata.len() - 1
                        }
                    };
                    usage.metadata.insert(index);
                }
                Read::Call(CallFact::Invalid(message)) => return Err(err(message.clone())),
            }
        }
        Ok(())
    }

    pub fn finish(self) -> Engine {
        let regex_work = crate::pattern::work_limit(self.limits.render_time);
        let config = if self.collected.literal_patterns.is_empty() {
            shared_config_state(self.env_lookup, regex_work)
        } else {
            let patterns = Patterns::default();
            patterns.set_literal(self.collected.literal_patterns);
            Arc::new(ConfigState {
                env: self.env_lookup,
                patterns: Arc::new(patterns),
                regex_work,
            })
        };
        Engine {
            config,
            ops: self.ops.into(),
            limits: self.limits,
            metadata: self.collected.metadata.into(),
        }
    }
}

/// The value as operator segments when every piece of markup is a plain `{{ header("x") }}` or
/// `{{ request_header("x") }}` (what both functions read is what `%REQ(x)%` and, for
/// `header()` in the response phase, `%RESP(x)%` read); `None` for anything else.
///
/// Decided from MiniJinja's own tokens ([`regions::split`]), without a parse: for these six
/// tokens the parse tree is one call of one string literal, and skipping the parse is the
/// point (such a value never compiles a template).
fn lower_header_calls(
    value: &str,
    regions: &[Region],
    response_phase: bool,
) -> Option<Result<Vec<Segment>, String>> {
    if !regions.iter().all(|r| {
        matches!(
            r,
            Region::Text(_)
                | Region::Jinja {
                    header_call: Some(_),
                    ..
                }
        )
    }) {
        return None;
    }
    let mut out: Vec<Segment> = Vec::new();
    let push = |seg: Segment, out: &mut Vec<Segment>| match (out.last_mut(), seg) {
        (Some(Segment::Literal(prev)), Segment::Literal(l)) => prev.push_str(&l),
        (_, seg) => out.push(seg),
    };
    for region in regions {
        match region {
            Region::Text(range) => match operators::parse(&value[range.clone()]) {
                Ok(segments) => segments.into_iter().for_each(|seg| push(seg, &mut out)),
                Err(e) => return Some(Err(e)),
            },
            Region::Jinja { header_call, .. } => {
                let call = header_call.as_ref()?;
                let name = call.name.to_ascii_lowercase();
                let kind = if !call.request && response_phase {
                    OperatorKind::Resp { name, alt: None }
                } else {
                    OperatorKind::Req { name, alt: None }
                };
                push(
                    Segment::Op(Operator {
                        kind,
                        max_len: None,
                    }),
                    &mut out,
                );
            }
        }
    }
    Some(Ok(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_matches_jinja_trailing_newline_rule() {
        let env = Environment::new();
        for s in ["a\n", "a\r\n", "a\n\n", "a", "\n", ""] {
            let jinja = env.render_str(s, ()).unwrap();
            assert_eq!(strip_trailing_newline(s), jinja, "{s:?}");
        }
    }

    #[test]
    fn plain_header_calls_compile_to_operators() {
        let lowered = |v: &str, response| lower_header_calls(v, &regions::split(v), response);
        let ops = lowered(
            r#"m={{ request_header(":method") }}&h={{header('X-A')}}%%"#,
            true,
        )
        .unwrap()
        .unwrap();
        let req = |n: &str| OperatorKind::Req {
            name: n.into(),
            alt: None,
        };
        let resp = |n: &str| OperatorKind::Resp {
            name: n.into(),
            alt: None,
        };
        let kinds: Vec<_> = ops
            .iter()
            .map(|s| match s {
                Segment::Op(op) => Ok(op.kind.clone()),
                Segment::Literal(l) => Err(l.clone()),
            })
            .collect();
        assert_eq!(
            kinds,
            vec![
                Err("m=".into()),
                Ok(req(":method")),
                Err("&h=".into()),
                Ok(resp("x-a")),
                Err("%".into())
            ]
        );
        let in_request = lowered("{{ header('x-a') }}", false).unwrap().unwrap();
        assert!(matches!(&in_request[..], [Segment::Op(op)] if op.kind == req("x-a")));
        for other in [
            "{{- header('a') }}",
            "{{ header('a') | upper }}",
            "{{ header(name) }}",
            "{{ header('a' ~ 'b') }}",
            "{{ header('a\\'b') }}",
            "{{ env('a') }}",
            "{% if 1 %}{{ header('a') }}{% endif %}",
            "{# c #}",
        ] {
            assert!(lowered(other, true).is_none(), "{other}");
        }
    }

    #[test]
    fn lowered_header_calls_render_as_the_template_engine_does() {
        use crate::memory::{MemoryMessage, MemoryStreamInfo};
        use crate::{BodyMode, Transformation};
        // `{{-` is never lowered; with nothing to strip it renders the same through Jinja.
        let values = [
            "m={{ request_header(\":METHOD\") }} h={{ header('x-a') }} n={{ header('none') }} %REQ(x-a)%\n",
            "{{ request_header('x-a') }}",
            "{{ header(\":status\") }}",
        ];
        for side in ["request", "response"] {
            for v in values {
                let config = |v: &str| {
                    let set = serde_json::json!([{"name": "x-out", "value": v}]);
                    Transformation::from_json(
                        serde_json::json!({ side: {"set": set} })
                            .to_string()
                            .as_bytes(),
                    )
                    .unwrap()
                };
                let outputs: Vec<_> = [v.to_owned(), v.replace("{{", "{{-")]
                    .iter()
                    .map(|v| {
                        let t = config(v);
                        let mut request = MemoryMessage::new(
                            &[
                                (":method", "POST"),
                                (":status", "q"),
                                ("x-a", "1"),
                                ("X-A", "2"),
                            ],
                            "",
                        );
                        let mut info = MemoryStreamInfo::default();
                        let snapshot = t.capture_request_headers(&request);
                        t.apply_request(&mut request, BodyMode::HeadersOnly, &mut info)
                            .unwrap();
                        let mut response =
                            MemoryMessage::new(&[(":status", "201"), ("x-a", "r")], "");
                        t.apply_response(
                            &mut response,
                            &snapshot,
                            BodyMode::HeadersOnly,
                            &mut info,
                        )
                        .unwrap();
                        (request.header("x-out"), response.header("x-out"))
                    })
                    .collect();
                assert_eq!(outputs[0], outputs[1], "{side}: {v:?}");
                assert!(outputs[0].0.is_some() || outputs[0].1.is_some(), "{v:?}");
            }
        }
    }
}
