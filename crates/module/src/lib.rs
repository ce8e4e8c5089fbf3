//! `librust_module.so`: every built-in filter of `rustformations`, nothing else.

rustformations::declare_module!();
