//! The template layer: compiling values once at config time and rendering them per request.
//!
//! Its files from the bottom up; a file imports only files above it (and the crate's
//! foundations), never one below:
//! - `limits.rs`: the render budget ([`Limits`]), the compile [`Options`], the meter.
//! - `usage.rs`: what compiled values read ([`HeaderNeeds`], `Usage`).
//! - `snapshot.rs`: the header values a render sees ([`HeaderSnapshot`]).
//! - `json_body.rs`: a JSON body as template variables, converting only the keys named.
//! - `context.rs`: the per-side render data and the config's state, as the render context.
//! - `extensions.rs`: the functions beyond kgateway's, and what their calls tell at load.
//! - `environment.rs`: the shared MiniJinja environment with every function registered.
//! - `analysis.rs`: what a template reads, from MiniJinja's parse tree.
//! - `regions.rs`: the markup and the text of a value, from MiniJinja's lexer.
//! - `owned_template.rs`: one compiled template, interned, with what it reads.
//! - `compiled.rs`: a compiled value: empty, literal, text and operators, or template.
//! - `engine.rs`: rendering a compiled value within the budget.
//! - `compiler.rs`: a value to its compiled form, and the config's engine.
//! - `value_cache.rs`: values compiled once for every config holding them (a bounded cache by
//!   mode, field and text).

mod analysis;
mod compiled;
mod compiler;
mod context;
mod engine;
mod environment;
pub mod extensions;
mod json_body;
mod limits;
mod owned_template;
mod regions;
mod snapshot;
mod usage;
mod value_cache;

pub(crate) use compiled::Compiled;
pub(crate) use compiler::Compiler;
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
pub(crate) use value_cache::compile as compile_value;
