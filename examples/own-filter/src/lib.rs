//! `librust_module.so` with every built-in filter of rustformations and `tenant-router`.

mod tenant_router;

rustformations::declare_module!(tenant_router::FILTER);
