//! The Envoy dynamic module `rust_module` (work in progress: filters are registered below).
