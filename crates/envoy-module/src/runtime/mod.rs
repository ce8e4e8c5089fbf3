//! What the hooks do, independent of the C API family: building configs and filters, running the
//! module's callbacks behind a panic barrier, failing closed, and counting panics.
//!
//! - [`configs`]: filter and per-route configs built from the module's factories;
//! - [`stream`]: a stream's instance, `filter_new`, and running a hook behind the panic barrier;
//! - [`stream_memory`]: the per-thread cache of freed stream blocks;
//! - [`panics`]: the panic hook, the catch around every hook and the SDK's last-resort barriers;
//! - [`counters`]: Envoy's counter results as the SDK reports them.

mod configs;
mod counters;
mod panics;
mod stream;
mod stream_memory;

pub(crate) use configs::*;
pub(crate) use counters::*;
pub(crate) use panics::*;
pub use stream::NewFilter;
pub(crate) use stream::*;

#[cfg(test)]
mod tests;
