//! Rendering compiled values: the [`Engine`] a config keeps, the per-side [`Scope`] its values
//! share, and the size cap and panic guard around each render.

use std::borrow::Cow;
use std::fmt;
use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;

use minijinja::budget::Meter;
use minijinja::value::Value;

use crate::error::WarningKind;
use crate::message::MetadataKey;
use crate::operators::{Operator, Segment};

use super::compiled::Compiled;
use super::context::{ConfigState, RenderData, Root};
use super::limits::{Limits, budget_message, metered};

/// The compiled environment plus the operator table.
pub(crate) struct Engine {
    pub(crate) config: Arc<ConfigState>,
    pub(crate) ops: Arc<[Operator]>,
    pub(crate) limits: Limits,
    pub(crate) metadata: Arc<[MetadataKey]>,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("operators", &self.ops.len())
            .field("limits", &self.limits)
            .finish()
    }
}

/// A failed render: the kind says whether the budget was the cause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RenderError {
    pub kind: WarningKind,
    pub message: String,
}

/// Per-render state shared by all values of one side.
pub(crate) struct Scope {
    data: RenderData,
    vars: Option<Value>,
    /// MiniJinja's context, built on the first template render: values made only of text and
    /// command operators never need it (nor the shared copy of the render data it holds).
    ctx: std::cell::OnceCell<Value>,
    /// What is left of the side's render budget (bytes and time), carried from value to value.
    meter: std::cell::Cell<Meter>,
}

impl Scope {
    fn ctx(&self, config: &Arc<ConfigState>) -> &Value {
        self.ctx.get_or_init(|| {
            Value::from_object(Root {
                data: Value::from_object(self.data.clone()),
                config: Value::from_dyn_object(config.clone()),
                vars: self.vars.clone().unwrap_or_default(),
            })
        })
    }
}

impl Engine {
    pub fn limits(&self) -> Limits {
        self.limits
    }

    pub fn ops(&self) -> Arc<[Operator]> {
        self.ops.clone()
    }

    /// Every metadata value some template of the config reads.
    pub fn metadata_keys(&self) -> &Arc<[MetadataKey]> {
        &self.metadata
    }

    pub fn scope(&self, data: RenderData, json: Option<&Value>) -> Scope {
        Scope {
            data,
            vars: json.cloned(),
            ctx: std::cell::OnceCell::new(),
            meter: std::cell::Cell::new(self.limits.meter()),
        }
    }

    /// Renders one value into `out` (reused between values, so a side's renders allocate
    /// once). Literals are borrowed, not copied.
    pub fn render<'a>(
        &self,
        value: &'a Compiled,
        scope: &Scope,
        cap: usize,
        out: &'a mut String,
    ) -> Result<&'a str, RenderError> {
        match value {
            Compiled::Empty => Ok(""),
            Compiled::Literal(s) => Ok(s),
            Compiled::Ops { segments, capacity } => {
                out.clear();
                out.reserve((*capacity).min(cap));
                for s in segments.iter() {
                    match s {
                        Segment::Literal(l) => out.push_str(l),
                        Segment::Op(op) => op.eval(&scope.data, out),
                    }
                    if out.len() > cap {
                        return Err(too_large(cap));
                    }
                }
                Ok(out)
            }
            Compiled::Template { template, .. } => {
                let mut buf = std::mem::take(out).into_bytes();
                buf.clear();
                let mut w = CappedWriter {
                    buf,
                    cap,
                    overflow: false,
                };
                // MiniJinja 2.12 panics on a few inputs (ordering a 128-bit integer against a
                // float, say). The render touches nothing shared, so such a panic is one
                // failed value, not a failed request.
                let before = scope.meter.get();
                let (result, after) = metered(before, || {
                    panic::catch_unwind(AssertUnwindSafe(|| {
                        template.with_dependent(|_, t| {
                            t.render_to_write(scope.ctx(&self.config), &mut w)
                                .map(|_| ())
                        })
                    }))
                });
                scope.meter.set(after);
                let result = result.map_err(|_| RenderError {
                    kind: WarningKind::Render,
                    message: "the template engine panicked while rendering this value".to_owned(),
                })?;
                if w.overflow {
                    return Err(too_large(cap));
                }
                if let (Err(_), Some(why)) = (&result, after.tripped) {
                    return Err(RenderError {
                        kind: WarningKind::Budget,
                        message: format!(
                            "render budget exceeded: {}",
                            budget_message(why, &self.limits)
                        ),
                    });
                }
                result.map_err(render_error)?;
                *out = lossy_string(Cow::Owned(w.buf));
                Ok(out)
            }
        }
    }
}

/// The value as UTF-8 (invalid sequences replaced), reusing an owned buffer when it is valid.
pub(crate) fn lossy_string(value: Cow<'_, [u8]>) -> String {
    match value {
        Cow::Owned(bytes) => String::from_utf8(bytes)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
        Cow::Borrowed(bytes) => String::from_utf8_lossy(bytes).into_owned(),
    }
}

pub(crate) fn too_large(cap: usize) -> RenderError {
    RenderError {
        kind: WarningKind::Budget,
        message: format!("rendered value exceeds {cap} bytes"),
    }
}

fn render_error(e: minijinja::Error) -> RenderError {
    let kind = if e.kind() == minijinja::ErrorKind::OutOfFuel {
        WarningKind::Budget
    } else {
        WarningKind::Render
    };
    RenderError {
        kind,
        message: format!("{e:#}"),
    }
}

/// Stops a render as soon as its output passes the cap, instead of after building it.
struct CappedWriter {
    buf: Vec<u8>,
    cap: usize,
    overflow: bool,
}

impl io::Write for CappedWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.len() + data.len() > self.cap {
            self.overflow = true;
            return Err(io::Error::other("output size cap exceeded"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
