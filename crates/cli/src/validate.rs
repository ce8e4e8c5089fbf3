//! `rustformations validate`: load every config the module would load, report errors with
//! their file line, field path and template position, and warnings.

use rustformations::{LoadedConfig, load_config};
use serde_json::{Value, json};
use transformations::{Transformation, ValueKind, operators};

use crate::input;
use crate::policy::{self, Found};
use crate::yaml;

/// One finding of `validate`.
#[derive(Debug, Clone)]
pub struct Finding {
    pub file: String,
    pub line: Option<usize>,
    pub object: String,
    pub field: String,
    pub template_position: Option<(usize, usize)>,
    pub message: String,
}

#[derive(Debug, Default)]
pub struct Report {
    /// `(file, object, filter)` of every config that loaded.
    pub ok: Vec<(String, String, String)>,
    pub errors: Vec<Finding>,
    pub warnings: Vec<Finding>,
    /// Files read.
    pub files: usize,
}

/// Validates every file; an unreadable or unparseable file is an error of the report.
pub fn run(files: &[String]) -> Result<Report, String> {
    let mut report = Report::default();
    for file in input::expand(files)? {
        let source = match input::read(&file).and_then(|s| {
            let text = s.text()?.to_owned();
            Ok((s.name, text))
        }) {
            Ok(s) => s,
            Err(message) => {
                report.errors.push(file_error(&file, None, message));
                continue;
            }
        };
        let (name, text) = source;
        let docs = match yaml::parse(&text) {
            Ok(docs) => docs,
            Err(e) => {
                report.errors.push(file_error(&name, e.line, e.message));
                continue;
            }
        };
        for doc in &docs {
            if !policy::is_known_document(&doc.value) {
                report.errors.push(file_error(
                    &name,
                    Some(doc.line),
                    "not a Kubernetes object (no apiVersion and kind) nor an Envoy config".into(),
                ));
            }
        }
        let found = policy::find(&docs);
        report.files += 1;
        for f in &found {
            check(&name, &docs, f, &mut report);
        }
    }
    Ok(report)
}

fn file_error(file: &str, line: Option<usize>, message: String) -> Finding {
    Finding {
        file: file.to_owned(),
        line,
        object: String::new(),
        field: String::new(),
        template_position: None,
        message,
    }
}

fn check(file: &str, docs: &[yaml::Document], found: &Found, report: &mut Report) {
    if found.filter_name.is_empty() && found.label.starts_with("TrafficPolicy/") {
        report.ok.push((
            file.to_owned(),
            found.label.clone(),
            "(no transformation or acl for this module)".into(),
        ));
        return;
    }
    match load_config(&found.filter_name, &found.config, found.per_route) {
        Ok(loaded) => {
            let what = if found.path.ends_with("spec.transformation") {
                String::new()
            } else if found.structured {
                found.path.clone()
            } else {
                format!("at {}", found.path)
            };
            report.ok.push((file.to_owned(), found.label.clone(), what));
            if let LoadedConfig::Transformation(t) = &loaded {
                warnings(file, docs, found, t, report);
            }
        }
        Err(error) => {
            let t_err = error.transformation.as_ref();
            let field = t_err.and_then(|e| e.location());
            let position = t_err.and_then(|e| e.template_position());
            report.errors.push(Finding {
                file: file.to_owned(),
                line: found.line(docs, field, position.map(|p| p.line)),
                object: found.label.clone(),
                field: found.field_path(field),
                template_position: position.map(|p| (p.line, p.column)),
                message: error.message,
            });
        }
    }
}

/// Things the module loads but that deserve a look: what kgateway's own module would do
/// differently, values that can only fail, entries the module skips.
fn warnings(
    file: &str,
    docs: &[yaml::Document],
    found: &Found,
    t: &Transformation,
    report: &mut Report,
) {
    let mut warn = |field: Option<&str>, message: String| {
        report.warnings.push(Finding {
            file: file.to_owned(),
            line: found.line(docs, field, None),
            object: found.label.clone(),
            field: found.field_path(field),
            template_position: None,
            message,
        });
    };
    for w in t.warnings() {
        // "request.set[2] ignored: ..." names its entry first.
        let field = w.split(' ').next().filter(|f| f.contains('['));
        warn(field, w.clone());
    }
    let config: Value = serde_json::from_slice(&found.config).unwrap_or(Value::Null);
    for (side_name, side) in [("request", t.request()), ("response", t.response())] {
        for v in side.values() {
            let raw = raw_value(&config, v.field);
            if !v.json_variables.is_empty() && !side.parses_json() {
                warn(
                    Some(v.field),
                    format!(
                        "reads {} which only a JSON body provides ({side_name}.body.parseAs: AsJson); \
                         without it every {side_name} on this route is answered 400",
                        v.json_variables.join(", ")
                    ),
                );
            }
            if let Some(raw) = raw {
                if has_command_operator(raw) {
                    warn(
                        Some(v.field),
                        "uses Envoy command operators (%...%): this module resolves them, \
                         kgateway's own module sends them as literal text"
                            .into(),
                    );
                }
                for function in transformations::extensions::NAMES {
                    if v.kind == ValueKind::Template && calls_function(raw, function) {
                        warn(
                            Some(v.field),
                            format!(
                                "calls `{function}()`, which only this module offers: kgateway's \
                                 own module answers such a route with a 400"
                            ),
                        );
                    }
                }
                for filter in ["tojson", "urlencode"] {
                    if v.kind == ValueKind::Template && uses_filter(raw, filter) {
                        warn(
                            Some(v.field),
                            format!(
                                "uses the `{filter}` filter, which kgateway's own module lacks \
                                 (there it is a render error)"
                            ),
                        );
                    }
                }
            }
        }
    }
}

/// Whether `raw` calls `name(...)` (not as a method or a filter, not inside a longer name).
fn calls_function(raw: &str, name: &str) -> bool {
    raw.match_indices(name).any(|(at, _)| {
        let before = raw[..at].trim_end().chars().next_back();
        let after = raw[at + name.len()..].trim_start();
        after.starts_with('(')
            && !before.is_some_and(|c| c.is_alphanumeric() || matches!(c, '_' | '.' | '|'))
    })
}

/// The configured text of `field` (`response.set[1].value`) in the config JSON.
fn raw_value<'a>(config: &'a Value, field: &str) -> Option<&'a str> {
    let mut node = config;
    for part in field.split('.') {
        let (key, index) = match part.split_once('[') {
            Some((k, rest)) => (k, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (part, None),
        };
        node = node.get(key)?;
        if let Some(i) = index {
            node = node.get(i)?;
        }
    }
    node.as_str()
}

/// Whether text parts of `value` hold a command operator, as the module parses them.
fn has_command_operator(value: &str) -> bool {
    // Jinja tags are not text; operators there are Jinja code, not operators.
    let mut text = String::new();
    let mut rest = value;
    while let Some(start) = rest.find(['{']) {
        text.push_str(&rest[..start]);
        let after = &rest[start..];
        let close = match after.get(..2) {
            Some("{{") => "}}",
            Some("{%") => "%}",
            Some("{#") => "#}",
            _ => {
                text.push('{');
                rest = &after[1..];
                continue;
            }
        };
        rest = after.find(close).map_or("", |end| &after[end + 2..]);
        text.push(' ');
    }
    text.push_str(rest);
    operators::parse(&text)
        .map(|segments| {
            segments
                .iter()
                .any(|s| matches!(s, operators::Segment::Op(_)))
        })
        .unwrap_or(false)
}

fn uses_filter(value: &str, filter: &str) -> bool {
    value.match_indices('|').any(|(i, _)| {
        let after = value[i + 1..].trim_start();
        after.starts_with(filter)
            && !after[filter.len()..].starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
    })
}

fn location(f: &Finding) -> String {
    match f.line {
        Some(line) => format!("{}:{line}:", f.file),
        None => format!("{}:", f.file),
    }
}

fn describe(f: &Finding) -> String {
    let mut out = String::new();
    if !f.object.is_empty() {
        out.push_str(&f.object);
        out.push_str(": ");
    }
    if !f.field.is_empty() {
        out.push_str(&f.field);
        if let Some((line, col)) = f.template_position {
            out.push_str(&format!(" (template line {line}, column {col})"));
        }
        out.push_str(": ");
    }
    out.push_str(&f.message);
    out
}

/// The text report: `ok` lines, then compiler-style errors and warnings, then a summary.
pub fn print_text(report: &Report) {
    for (_, object, what) in &report.ok {
        if what.is_empty() {
            outln!("ok {object}");
        } else {
            outln!("ok {object} {what}");
        }
    }
    for f in &report.errors {
        outln!("{} error: {}", location(f), describe(f));
    }
    for f in &report.warnings {
        outln!("{} warning: {}", location(f), describe(f));
    }
    outln!(
        "{} file(s), {} ok, {} error(s), {} warning(s)",
        report.files,
        report.ok.len(),
        report.errors.len(),
        report.warnings.len()
    );
}

fn finding_json(f: &Finding) -> Value {
    json!({
        "file": f.file,
        "line": f.line,
        "object": f.object,
        "field": f.field,
        "template_line": f.template_position.map(|p| p.0),
        "template_column": f.template_position.map(|p| p.1),
        "message": f.message,
    })
}

pub fn to_json(report: &Report) -> Value {
    json!({
        "files": report.files,
        "ok": report.ok.iter().map(|(file, object, filter)| json!({"file": file, "object": object, "filter": filter})).collect::<Vec<_>>(),
        "errors": report.errors.iter().map(finding_json).collect::<Vec<_>>(),
        "warnings": report.warnings.iter().map(finding_json).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operators_only_in_text_parts() {
        assert!(has_command_operator("m=%REQ(:METHOD)%"));
        assert!(has_command_operator("{{ a }}%REQ(x)%"));
        assert!(!has_command_operator("{{ \"%REQ(x)%\" }}"));
        assert!(!has_command_operator("100% {% if a %}x{% endif %}"));
        assert!(!has_command_operator("plain"));
    }

    #[test]
    fn filters_found_after_a_pipe() {
        assert!(uses_filter("{{ a | tojson }}", "tojson"));
        assert!(uses_filter("{{ a|urlencode }}", "urlencode"));
        assert!(!uses_filter("{{ a | tojsonx }}", "tojson"));
        assert!(!uses_filter("{{ tojson }}", "tojson"));
    }

    #[test]
    fn calls_of_functions_kgateway_lacks() {
        assert!(calls_function("{{ query_param(\"a\") }}", "query_param"));
        assert!(calls_function(
            "{{ json_set (body(), \"/a\", 1) }}",
            "json_set"
        ));
        assert!(!calls_function(
            "{{ set_query_param(p, \"a\", 1) }}",
            "query_param"
        ));
        assert!(!calls_function("{{ x.metadata(1) }}", "metadata"));
        assert!(!calls_function("{{ metadata }}", "metadata"));
    }

    #[test]
    fn raw_values_by_field_path() {
        let config = json!({"response": {"set": [{"name": "a", "value": "x"}, {"name": "b", "value": "y"}], "body": {"value": "z"}}});
        assert_eq!(raw_value(&config, "response.set[1].value"), Some("y"));
        assert_eq!(raw_value(&config, "response.body.value"), Some("z"));
        assert_eq!(raw_value(&config, "request.set[0].value"), None);
    }
}
