//! The filters of the Envoy dynamic module `rust_module`: the lab's `my-smart-header`, a drop-in
//! replacement for kgateway's (`rustformation`, its alias `http_simple_mutations`, and
//! `http-acl`) and `request-size-limit`, with the table that names them and
//! [`declare_module!`], which makes a module of them plus a crate's own filters.
//!
//! The shipped `librust_module.so` is `crates/module`: `rustformations::declare_module!();`.
//! This crate glues `envoy-module` (the SDK) to the pure `transformations` and `acl` crates.

mod envoy_message;
pub mod json_object;
mod lifecycle;
pub mod outside_envoy;
mod per_route;
pub mod registry;
pub mod release;
mod transform;

use transformations::Options;

/// The SDK, for a crate's own filters and for [`declare_module!`].
pub use envoy_module;
pub use registry::{Filter, LoadError, LoadedConfig, Registry};
pub(crate) use transform_config::SharedTransformation;
/// The marker header lives with the pure logic, shared with the command-line tool.
pub use transformations::marker;

/// The filter names this module answers to.
pub const SMART_HEADER: &str = "my-smart-header";
pub const RUSTFORMATION: &str = "rustformation";
/// kgateway v2.2's name for the same filter.
pub const SIMPLE_MUTATIONS: &str = "http_simple_mutations";
pub const HTTP_ACL: &str = acl::FILTER_NAME;
pub const SIZE_LIMIT: &str = size_limit::FILTER_NAME;

/// Declares each filter file as a module and lists the filters it defines in
/// [`BUILT_IN_FILTERS`], in order: a filter file is one line of [`built_in_filters!`].
macro_rules! built_in_filters {
    ($($visibility:vis mod $file:ident: $($filter:ident),+;)+) => {
        $($visibility mod $file;)+

        /// Every filter of this crate; the unknown-name message lists them in this order.
        pub const BUILT_IN_FILTERS: &[Filter] = &[$($($file::$filter,)+)+];
    };
}

built_in_filters! {
    mod transform_config: SMART_HEADER_FILTER, RUSTFORMATION_FILTER, SIMPLE_MUTATIONS_FILTER;
    mod http_acl: FILTER;
    mod size_limit: FILTER;
    mod test_filters: PANIC;
}

/// The built-in filters alone: what `crates/module` ships and what the CLI loads.
pub static BUILT_IN: Registry = Registry::new(&[BUILT_IN_FILTERS]);

/// Exports Envoy's module hooks from the calling crate (a `cdylib`), serving every built-in
/// filter plus the [`Filter`]s given; a name that is already taken fails the build:
///
/// ```text
/// mod tenant_router;
/// rustformations::declare_module!(tenant_router::FILTER);
/// ```
#[macro_export]
macro_rules! declare_module {
    ($($filter:expr),* $(,)?) => {
        const _: () = {
            const FILTERS: &[&[$crate::Filter]] = &[$crate::BUILT_IN_FILTERS, &[$($filter),*]];
            ::std::assert!(
                $crate::registry::names_are_unique(FILTERS),
                "two filters of this module have the same name"
            );
            static REGISTRY: $crate::Registry = $crate::Registry::new(FILTERS);

            fn new_filter_config(
                envoy: &mut dyn $crate::envoy_module::EnvoyFilterConfig,
                filter_name: &str,
                config: &[u8],
            ) -> ::std::result::Result<
                ::std::boxed::Box<dyn $crate::envoy_module::HttpFilterConfig>,
                ::std::string::String,
            > {
                REGISTRY.new_filter_config(envoy, filter_name, config)
            }

            fn new_per_route_config(
                filter_name: &str,
                config: &[u8],
            ) -> ::std::result::Result<$crate::envoy_module::PerRouteConfig, ::std::string::String>
            {
                REGISTRY.new_per_route_config(filter_name, config)
            }

            $crate::envoy_module::declare_module!($crate::envoy_module::Module {
                new_filter_config,
                new_per_route_config,
            });
        };
    };
}

/// Envoy's config callback for the built-in filters (`DynamicModuleFilter`).
pub fn new_filter_config(
    envoy: &mut dyn envoy_module::EnvoyFilterConfig,
    filter_name: &str,
    config: &[u8],
) -> Result<Box<dyn envoy_module::HttpFilterConfig>, String> {
    BUILT_IN.new_filter_config(envoy, filter_name, config)
}

/// Envoy's per-route config callback for the built-in filters (`DynamicModuleFilterPerRoute`).
pub fn new_per_route_config(
    filter_name: &str,
    config: &[u8],
) -> Result<envoy_module::PerRouteConfig, String> {
    BUILT_IN.new_per_route_config(filter_name, config)
}

/// Loads `config` for `filter_name` as Envoy's config callbacks do; `per_route` selects the
/// per-route one (`DynamicModuleFilterPerRoute`), otherwise the listener's (`DynamicModuleFilter`).
pub fn load_config(
    filter_name: &str,
    config: &[u8],
    per_route: bool,
) -> Result<LoadedConfig, LoadError> {
    load_config_with(filter_name, config, per_route, &Options::default())
}

/// [`load_config`] with compile options (e.g. where `env()` reads from); the module always
/// uses the defaults (Envoy's process environment).
pub fn load_config_with(
    filter_name: &str,
    config: &[u8],
    per_route: bool,
    options: &Options,
) -> Result<LoadedConfig, LoadError> {
    BUILT_IN.load_config_with(filter_name, config, per_route, options)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fenced snippets of a Markdown page in `language`.
    fn snippets<'a>(page: &'a str, language: &str) -> Vec<&'a str> {
        page.split(&format!("```{language}\n"))
            .skip(1)
            .map(|rest| rest.split("```").next().unwrap_or_default())
            .collect()
    }

    /// docs/writing-a-filter.md quotes this crate and examples/own-filter: every Rust and TOML
    /// snippet there appears verbatim in the source, and its Envoy config is the example's
    /// envoy.yaml (which the example's end-to-end test runs), so the guide cannot drift from
    /// the code it walks through.
    #[test]
    fn the_guide_quotes_the_source() {
        let guide = include_str!("../../../docs/writing-a-filter.md");
        let rust = [
            include_str!("size_limit.rs"),
            include_str!("lib.rs"),
            include_str!("../../../examples/own-filter/src/lib.rs"),
            include_str!("../../../examples/own-filter/src/tenant_router.rs"),
        ];
        let rust_snippets = snippets(guide, "rust");
        assert!(rust_snippets.len() >= 12, "{}", rust_snippets.len());
        for snippet in rust_snippets {
            assert!(
                rust.iter().any(|file| file.contains(snippet)),
                "not in the source:\n{snippet}"
            );
        }
        let toml = [
            include_str!("../Cargo.toml"),
            include_str!("../../../examples/own-filter/Cargo.toml"),
        ];
        let toml_snippets = snippets(guide, "toml");
        assert_eq!(toml_snippets.len(), 2);
        for snippet in toml_snippets {
            assert!(
                toml.iter().any(|file| file.contains(snippet)),
                "not in the source:\n{snippet}"
            );
        }
        // The example's package and module are shown whole.
        assert!(guide.contains(&format!("```toml\n{}```", toml[1])));
        assert!(guide.contains(&format!("```rust\n{}```", rust[2])));
        let envoy_yaml = include_str!("../../../examples/own-filter/envoy.yaml");
        assert!(guide.contains(&format!("```yaml\n{envoy_yaml}```")));
    }

    /// docs/failure-behaviour.md quotes Envoy's line for an unknown filter name.
    #[test]
    fn the_unknown_name_message_is_the_one_the_docs_quote() {
        let docs = include_str!("../../../docs/failure-behaviour.md");
        let row = docs
            .lines()
            .find(|l| l.starts_with("| `unknown-filter` |"))
            .expect("the unknown-filter row");
        let expected = format!(
            "rust_module: filter 'no-such-filter' rejected its config: {} ``",
            BUILT_IN.unknown_name_message("no-such-filter")
        );
        assert!(row.ends_with(&format!("{expected} |")), "{row}\n{expected}");
    }

    #[test]
    fn the_unknown_name_message_lists_every_public_filter_in_table_order() {
        assert_eq!(
            BUILT_IN.unknown_name_message("x"),
            "unknown filter name 'x'; this module provides my-smart-header, rustformation, \
             http_simple_mutations, http-acl and request-size-limit"
        );
        static EXTENDED: Registry = Registry::new(&[
            BUILT_IN_FILTERS,
            &[Filter::new("tenant-router", |_, _| Err("unused".into()))],
        ]);
        assert!(
            EXTENDED
                .unknown_name_message("x")
                .ends_with("http-acl, request-size-limit and tenant-router")
        );
        assert_eq!(
            Registry::new(&[]).unknown_name_message("x"),
            "unknown filter name 'x'; this module provides no filter"
        );
    }

    #[test]
    fn every_filter_has_its_own_name() {
        use registry::names_are_unique;
        let mut names: Vec<&str> = BUILT_IN_FILTERS.iter().map(|f| f.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), BUILT_IN_FILTERS.len());
        assert!(names_are_unique(&[BUILT_IN_FILTERS]));
        let own = Filter::new("tenant-router", |_, _| Err("unused".into()));
        assert!(names_are_unique(&[BUILT_IN_FILTERS, &[own]]));
        assert!(!names_are_unique(&[BUILT_IN_FILTERS, &[own, own]]));
        assert!(!names_are_unique(&[
            BUILT_IN_FILTERS,
            &[size_limit::FILTER]
        ]));
        assert!(!names_are_unique(&[&[own], &[], &[own]]));
        assert!(names_are_unique(&[]));
    }

    #[test]
    fn a_filter_without_per_route_config_refuses_one_in_envoy_and_in_the_cli() {
        let err = new_per_route_config(SIZE_LIMIT, br#"{"max_bytes": 1}"#)
            .err()
            .unwrap();
        assert_eq!(err, "request-size-limit has no per-route config");
        let err = load_config(SIZE_LIMIT, br#"{"max_bytes": 1}"#, true).unwrap_err();
        assert_eq!(err.message, "request-size-limit has no per-route config");
        assert!(matches!(
            load_config(SIZE_LIMIT, br#"{"max_bytes": 1}"#, false),
            Ok(LoadedConfig::Other)
        ));
    }

    #[test]
    fn a_test_only_filter_is_off_without_its_environment_variable() {
        // Tests never set RUST_MODULE_TEST_FILTERS, so the refusal is what they see.
        let err = load_config("test-panic", br#"{"panic_on": "config"}"#, false).unwrap_err();
        assert_eq!(
            err.message,
            "filter 'test-panic' exists only for tests and is off unless RUST_MODULE_TEST_FILTERS=1"
        );
        assert!(!BUILT_IN.public_names().contains(&"test-panic"));
    }

    #[test]
    fn a_config_that_is_not_an_object_is_refused_by_the_project_filters() {
        for config in ["[1]", "\"x\"", "1"] {
            let err = load_config(SIZE_LIMIT, config.as_bytes(), false).unwrap_err();
            assert!(err.message.contains("expected a JSON object"), "{err}");
        }
    }
}
