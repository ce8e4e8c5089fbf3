//! YAML (and so JSON) documents as `serde_json` values, with the line of every node, so an
//! error in a template can name the line of the file it is on.

use std::collections::HashMap;

use serde_json::{Map, Number, Value};
use yaml_rust2::Yaml;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// Where a node starts in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// 1-based line of the node (for a block scalar, `|` or `>`, its first line of text).
    pub line: usize,
    /// True for a block scalar.
    pub block: bool,
}

/// One document of a YAML stream.
#[derive(Debug, Clone)]
pub struct Document {
    pub value: Value,
    /// Node positions by path (`spec.transformation.response.set[1].value`).
    pub positions: HashMap<String, Position>,
    /// 1-based line where the document starts.
    pub line: usize,
}

/// Parses every document of `text`. JSON is YAML, so JSON input works the same way.
pub fn parse(text: &str) -> Result<Vec<Document>, ParseError> {
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(text);
    parser.load(&mut builder, true).map_err(|e| ParseError {
        line: Some(e.marker().line()),
        message: format!("not YAML: {}", e.info()),
    })?;
    if let Some(message) = builder.error {
        return Err(ParseError {
            line: None,
            message,
        });
    }
    Ok(builder.documents)
}

/// Why a file is not YAML, and where.
#[derive(Debug, Clone)]
pub struct ParseError {
    pub line: Option<usize>,
    pub message: String,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(line) => write!(f, "line {line}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

enum Frame {
    Seq(Vec<Value>, usize),
    Map(Map<String, Value>, Option<String>, usize),
}

#[derive(Default)]
struct Builder {
    documents: Vec<Document>,
    stack: Vec<(Frame, String)>,
    positions: HashMap<String, Position>,
    anchors: HashMap<usize, Value>,
    doc_line: usize,
    error: Option<String>,
}

const MAX_DEPTH: usize = 256;

impl Builder {
    /// The path of the node about to be added to the innermost collection.
    fn child_path(&self) -> String {
        match self.stack.last() {
            None => String::new(),
            Some((Frame::Seq(items, _), path)) => format!("{path}[{}]", items.len()),
            Some((Frame::Map(_, Some(key), _), path)) if path.is_empty() => key.clone(),
            Some((Frame::Map(_, Some(key), _), path)) => format!("{path}.{key}"),
            // A key: its position is not needed.
            Some((Frame::Map(_, None, _), path)) => path.clone(),
        }
    }

    fn push_value(&mut self, value: Value) {
        match self.stack.last_mut() {
            None => self.documents.push(Document {
                value,
                positions: std::mem::take(&mut self.positions),
                line: self.doc_line,
            }),
            Some((Frame::Seq(items, _), _)) => items.push(value),
            Some((Frame::Map(map, key, _), _)) => match key.take() {
                Some(k) => {
                    map.insert(k, value);
                }
                None => {
                    let k = match value {
                        Value::String(s) => s,
                        other => other.to_string(),
                    };
                    *key = Some(k);
                }
            },
        }
    }

    fn is_key(&self) -> bool {
        matches!(self.stack.last(), Some((Frame::Map(_, None, _), _)))
    }
}

fn scalar(text: String, style: TScalarStyle) -> Value {
    if style != TScalarStyle::Plain {
        return Value::String(text);
    }
    match Yaml::from_str(&text) {
        Yaml::Integer(i) => Value::Number(i.into()),
        Yaml::Real(r) => r
            .parse::<f64>()
            .ok()
            .and_then(Number::from_f64)
            .map_or(Value::String(text), Value::Number),
        Yaml::Boolean(b) => Value::Bool(b),
        Yaml::Null => Value::Null,
        _ => Value::String(text),
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.error.is_some() {
            return;
        }
        match ev {
            Event::DocumentStart => {
                self.doc_line = mark.line().max(1);
                self.anchors.clear();
            }
            Event::Scalar(text, style, anchor, _) => {
                if !self.is_key() {
                    let block = matches!(style, TScalarStyle::Literal | TScalarStyle::Folded);
                    let path = self.child_path();
                    self.positions.insert(
                        path,
                        Position {
                            line: mark.line(),
                            block,
                        },
                    );
                }
                let value = scalar(text, style);
                if anchor > 0 {
                    self.anchors.insert(anchor, value.clone());
                }
                self.push_value(value);
            }
            Event::Alias(id) => {
                let value = self.anchors.get(&id).cloned().unwrap_or(Value::Null);
                self.push_value(value);
            }
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                if self.stack.len() >= MAX_DEPTH {
                    self.error = Some(format!("nested deeper than {MAX_DEPTH} levels"));
                    return;
                }
                let path = self.child_path();
                if self.is_key() {
                    self.error = Some(format!(
                        "line {}: a collection as a mapping key is not supported",
                        mark.line()
                    ));
                    return;
                }
                self.positions.insert(
                    path.clone(),
                    Position {
                        line: mark.line(),
                        block: false,
                    },
                );
                let frame = if matches!(ev, Event::SequenceStart(..)) {
                    Frame::Seq(Vec::new(), anchor)
                } else {
                    Frame::Map(Map::new(), None, anchor)
                };
                self.stack.push((frame, path));
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let Some((frame, _)) = self.stack.pop() else {
                    return;
                };
                let (value, anchor) = match frame {
                    Frame::Seq(items, a) => (Value::Array(items), a),
                    Frame::Map(map, _, a) => (Value::Object(map), a),
                };
                if anchor > 0 {
                    self.anchors.insert(anchor, value.clone());
                }
                self.push_value(value);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_values_and_lines() {
        let text = "a: 1\nb:\n  - x\n  - 'y'\n  - |\n    block\n---\nc: true\nd: null\ne: 1.5\n";
        let docs = parse(text).unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(
            docs[0].value,
            serde_json::json!({"a": 1, "b": ["x", "y", "block\n"]})
        );
        assert_eq!(docs[0].positions["b[1]"].line, 4);
        assert_eq!(
            docs[0].positions["b[2]"],
            Position {
                line: 6,
                block: true
            }
        );
        assert_eq!(
            docs[1].value,
            serde_json::json!({"c": true, "d": null, "e": 1.5})
        );
        assert_eq!(docs[1].positions["c"].line, 8);
    }

    #[test]
    fn json_and_anchors() {
        let docs = parse("{\"a\": [1, \"2\"], \"b\": {\"c\": \"d\"}}").unwrap();
        assert_eq!(
            docs[0].value,
            serde_json::json!({"a": [1, "2"], "b": {"c": "d"}})
        );
        let docs = parse("x: &v {k: 1}\ny: *v\n").unwrap();
        assert_eq!(docs[0].value["y"], serde_json::json!({"k": 1}));
    }

    #[test]
    fn errors_are_messages() {
        assert!(parse("a: [1, 2\n").is_err());
        assert!(parse("a: b: c\n").is_err());
    }
}
