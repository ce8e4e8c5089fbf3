//! The template layer: compiling values once at config time and rendering them per request.
//!
//! From the bottom up (a file imports only the ones above it):
//! - [`limits`]: the render budget ([`Limits`]), the compile [`Options`], the meter.
//! - [`usage`]: what compiled values read ([`HeaderNeeds`], `Usage`).
//! - [`snapshot`]: the header values a render sees ([`HeaderSnapshot`]).
//! - [`json_body`]: a JSON body as template variables, converting only the keys named.
//! - `context`: the per-side render data and the config state, as the render context.
//! - [`extensions`]: the functions beyond kgateway's, and what their calls tell at load.
//! - `environment`: the shared MiniJinja environment with every function registered.
//! - `analysis`: what a template reads, from MiniJinja's parse tree.
//! - `regions`: markup and text of a value, from MiniJinja's lexer.
//! - `owned_template`: one compiled template, interned, with what it reads.
//! - `compiler`: a value to a `Compiled` (literal, operators or template).
//! - `engine`: rendering a `Compiled` within the budget.

mod analysis;
mod compiler;
mod context;
mod engine;
mod environment;
pub mod extensions;
pub(crate) mod json_body;
pub mod limits;
mod owned_template;
mod regions;
pub mod snapshot;
pub mod usage;

pub(crate) use compiler::{Compiled, Compiler};
pub(crate) use context::RenderData;
pub(crate) use engine::{Engine, RenderError, too_large};
pub(crate) use json_body::parse_json_body;
pub use limits::{
    DEFAULT_FUEL, DEFAULT_RENDER_BYTES, DEFAULT_RENDER_TIME, EnvLookup, Limits, MAX_BODY_BYTES,
    MAX_HEADER_VALUE_BYTES, Options, RENDER_BYTES_ENV, RENDER_TIME_ENV,
};
pub use snapshot::HeaderSnapshot;
pub use usage::HeaderNeeds;
pub(crate) use usage::Usage;
