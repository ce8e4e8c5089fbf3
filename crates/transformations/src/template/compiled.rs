//! A compiled value ([`Compiled`]): empty, a literal, text and operators, or a template.

use std::sync::Arc;

use crate::operators::{Operator, Segment};

use super::owned_template::OwnedTemplate;
use super::usage::Usage;

/// A compiled value.
#[derive(Debug, Clone)]
pub(crate) enum Compiled {
    Empty,
    Literal(Box<str>),
    /// Text and command operators; `capacity` sizes the output buffer (the text plus a typical
    /// value per operator), so a render allocates once.
    Ops {
        segments: Box<[Segment]>,
        capacity: usize,
    },
    Template {
        /// The compiled template (named after its field path), shared by every live value
        /// with the same field and source; it also holds the names it looks up.
        template: Arc<OwnedTemplate>,
    },
}

impl Compiled {
    pub(crate) fn ops(mut segments: Vec<Segment>, usage: &mut Usage) -> Compiled {
        for s in &segments {
            if let Segment::Op(op) = s {
                usage.record_op(op);
            }
        }
        // Jinja drops one trailing newline; a value behaves the same whichever form it has.
        if let Some(Segment::Literal(last)) = segments.last_mut() {
            let kept = strip_trailing_newline(last).len();
            last.truncate(kept);
            if last.is_empty() {
                segments.pop();
            }
        }
        let capacity = segments
            .iter()
            .map(|s| match s {
                Segment::Literal(l) => l.len(),
                Segment::Op(_) => 32,
            })
            .sum();
        Compiled::Ops {
            segments: segments.into(),
            capacity,
        }
    }

    pub fn literal(&self) -> Option<&str> {
        match self {
            Compiled::Literal(s) => Some(s),
            _ => None,
        }
    }

    /// Variables of a template that are neither functions nor set inside it: they can only come
    /// from a JSON body.
    pub fn undeclared(&self) -> &[String] {
        match self {
            Compiled::Template { template } => &template.reads().undeclared,
            _ => &[],
        }
    }

    /// Every name a template's code refers to (functions, JSON keys, its own variables), sorted
    /// (empty for other values).
    pub fn variables(&self) -> &[String] {
        match self {
            Compiled::Template { template } => &template.reads().variables,
            _ => &[],
        }
    }

    /// The command operators of a value made of text and operators.
    pub fn operators(&self) -> impl Iterator<Item = &Operator> {
        let segments: &[Segment] = match self {
            Compiled::Ops { segments, .. } => segments,
            _ => &[],
        };
        segments.iter().filter_map(|s| match s {
            Segment::Op(op) => Some(op),
            Segment::Literal(_) => None,
        })
    }
}

/// MiniJinja drops a single trailing newline unless told otherwise (`keep_trailing_newline`).
pub(crate) fn strip_trailing_newline(s: &str) -> &str {
    s.strip_suffix("\r\n")
        .or_else(|| s.strip_suffix('\n'))
        .unwrap_or(s)
}
