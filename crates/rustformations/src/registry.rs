//! The filters a module answers to, by name: one table from which Envoy's config callbacks, the
//! per-route callbacks, the CLI's `validate`/`explain` and the unknown-name message all derive.
//!
//! A filter is one [`Filter`] (its name and constructors); [`crate::BUILT_IN_FILTERS`] lists this
//! crate's, and [`crate::declare_module!`] builds a module from them plus a crate's own.

use envoy_module::{CounterId, EnvoyFilterConfig, HttpFilterConfig, PerRouteConfig};
use transformations::{Options, Transformation};

use crate::lifecycle;

/// Builds a filter config from its bytes when Envoy loads it; an `Err` rejects the config and is
/// logged with the filter's name. Counters are defined here (Envoy freezes them afterwards).
pub type NewConfigFn = fn(
    envoy: &mut dyn EnvoyFilterConfig,
    config: &[u8],
) -> Result<Box<dyn HttpFilterConfig>, String>;

/// Builds a route's config (`DynamicModuleFilterPerRoute`) from its bytes; an `Err` rejects it.
pub type NewPerRouteConfigFn = fn(config: &[u8]) -> Result<PerRouteConfig, String>;

/// Loads a config outside Envoy, as the CLI's `validate` and `explain` do; `per_route` selects the
/// route's config. A filter without one is loaded by running its constructors (see
/// [`Filter::load`]).
pub type LoadFn =
    fn(config: &[u8], per_route: bool, options: &Options) -> Result<LoadedConfig, LoadError>;

/// One filter of a module: the name Envoy's `filter_name` selects it by, and its constructors.
#[derive(Clone, Copy)]
pub struct Filter {
    pub name: &'static str,
    pub new_config: NewConfigFn,
    /// `None`: a route's config for this name is refused ("<name> has no per-route config").
    pub new_per_route_config: Option<NewPerRouteConfigFn>,
    /// `None`: the CLI runs the constructors against a config side outside Envoy.
    pub loader: Option<LoadFn>,
    /// Refused unless the Envoy process runs with `RUST_MODULE_TEST_FILTERS=1`, and never listed
    /// as one of the module's filters: it exists only to prove a behaviour in tests.
    pub test_only: bool,
}

impl Filter {
    /// A filter with a listener config only.
    pub const fn new(name: &'static str, new_config: NewConfigFn) -> Filter {
        Filter {
            name,
            new_config,
            new_per_route_config: None,
            loader: None,
            test_only: false,
        }
    }

    /// The same filter, also configurable per route.
    pub const fn with_per_route_config(self, new_per_route_config: NewPerRouteConfigFn) -> Filter {
        Filter {
            new_per_route_config: Some(new_per_route_config),
            ..self
        }
    }

    /// The same filter, loaded outside Envoy by `loader` instead of its constructors.
    pub const fn with_loader(self, loader: LoadFn) -> Filter {
        Filter {
            loader: Some(loader),
            ..self
        }
    }

    /// The same filter, off unless `RUST_MODULE_TEST_FILTERS=1` (see [`Filter::test_only`]).
    pub const fn test_only(self) -> Filter {
        Filter {
            test_only: true,
            ..self
        }
    }

    /// Loads `config` outside Envoy, as Envoy's callbacks would: with the filter's own loader,
    /// or by running its constructors (the listener's against [`OutsideEnvoy`]).
    pub fn load(
        &self,
        config: &[u8],
        per_route: bool,
        options: &Options,
    ) -> Result<LoadedConfig, LoadError> {
        if let Some(loader) = self.loader {
            return loader(config, per_route, options);
        }
        if per_route {
            let new_per_route_config = self
                .new_per_route_config
                .ok_or_else(|| LoadError::from(self.no_per_route_config()))?;
            new_per_route_config(config)?;
        } else {
            (self.new_config)(&mut OutsideEnvoy, config)?;
        }
        Ok(LoadedConfig::Other)
    }

    fn no_per_route_config(&self) -> String {
        format!("{} has no per-route config", self.name)
    }
}

/// Where Envoy's `RUST_MODULE_TEST_FILTERS=1` turns on the filters marked [`Filter::test_only`].
pub const TEST_FILTERS_ENV: &str = "RUST_MODULE_TEST_FILTERS";

fn test_filters_enabled() -> bool {
    std::env::var(TEST_FILTERS_ENV).is_ok_and(|v| v == "1")
}

/// Whether no two filters of `tables` have the same name; [`crate::declare_module!`] checks it
/// while compiling, so a crate's filter cannot hide a built-in one (or the other way round).
pub const fn names_are_unique(tables: &[&[Filter]]) -> bool {
    let mut a = 0;
    while a < tables.len() {
        let mut i = 0;
        while i < tables[a].len() {
            // Every filter after (a, i): the rest of its table, then the later tables.
            let mut b = a;
            let mut j = i + 1;
            while b < tables.len() {
                while j < tables[b].len() {
                    if same_str(tables[a][i].name, tables[b][j].name) {
                        return false;
                    }
                    j += 1;
                }
                b += 1;
                j = 0;
            }
            i += 1;
        }
        a += 1;
    }
    true
}

const fn same_str(x: &str, y: &str) -> bool {
    let (x, y) = (x.as_bytes(), y.as_bytes());
    if x.len() != y.len() {
        return false;
    }
    let mut k = 0;
    while k < x.len() {
        if x[k] != y[k] {
            return false;
        }
        k += 1;
    }
    true
}

/// The filters of a module: tables searched in order, by name.
pub struct Registry {
    tables: &'static [&'static [Filter]],
}

impl Registry {
    pub const fn new(tables: &'static [&'static [Filter]]) -> Registry {
        Registry { tables }
    }

    fn filters(&self) -> impl Iterator<Item = &'static Filter> {
        self.tables.iter().flat_map(|table| table.iter())
    }

    /// The names a module lists as its filters (test-only ones left out), in table order.
    pub fn public_names(&self) -> Vec<&'static str> {
        self.filters()
            .filter(|f| !f.test_only)
            .map(|f| f.name)
            .collect()
    }

    /// The filter `name` selects, or why there is none (an unknown name lists the known ones).
    pub fn find(&self, name: &str) -> Result<&'static Filter, String> {
        match self.filters().find(|f| f.name == name) {
            Some(filter) if filter.test_only && !test_filters_enabled() => Err(format!(
                "filter '{name}' exists only for tests and is off unless {TEST_FILTERS_ENV}=1"
            )),
            Some(filter) => Ok(filter),
            None => Err(self.unknown_name_message(name)),
        }
    }

    /// `unknown filter name 'x'; this module provides a, b and c`.
    pub fn unknown_name_message(&self, name: &str) -> String {
        let names = self.public_names();
        let listed = match names.split_last() {
            None => "no filter".to_owned(),
            Some((last, [])) => (*last).to_owned(),
            Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
        };
        format!("unknown filter name '{name}'; this module provides {listed}")
    }

    /// Envoy's config callback (`DynamicModuleFilter`).
    pub fn new_filter_config(
        &self,
        envoy: &mut dyn EnvoyFilterConfig,
        filter_name: &str,
        config: &[u8],
    ) -> Result<Box<dyn HttpFilterConfig>, String> {
        let config = (self.find(filter_name)?.new_config)(envoy, config)?;
        Ok(Box::new(lifecycle::Counted::new(config)))
    }

    /// Envoy's per-route config callback (`DynamicModuleFilterPerRoute`).
    pub fn new_per_route_config(
        &self,
        filter_name: &str,
        config: &[u8],
    ) -> Result<PerRouteConfig, String> {
        let filter = self.find(filter_name)?;
        let new_per_route_config = filter
            .new_per_route_config
            .ok_or_else(|| filter.no_per_route_config())?;
        new_per_route_config(config)
    }

    /// A config loaded as this module's callbacks load it, without Envoy (the CLI's path).
    pub fn load_config_with(
        &self,
        filter_name: &str,
        config: &[u8],
        per_route: bool,
        options: &Options,
    ) -> Result<LoadedConfig, LoadError> {
        self.find(filter_name)?.load(config, per_route, options)
    }
}

/// A filter config as this module loads it, without Envoy (what `rustformations validate`
/// checks): the same functions the config callbacks call.
#[derive(Debug)]
pub enum LoadedConfig {
    /// `my-smart-header`, `rustformation`, `http_simple_mutations`.
    Transformation(Box<Transformation>),
    /// `http-acl`.
    Acl(acl::AclPolicy),
    /// A filter without a compiled form worth showing (`request-size-limit`, a crate's own).
    Other,
}

/// Why a config does not load: the message Envoy's log shows, plus the structured
/// transformation error when there is one (field path, template position).
#[derive(Debug, Clone)]
pub struct LoadError {
    pub message: String,
    pub transformation: Option<transformations::Error>,
}

impl From<String> for LoadError {
    fn from(message: String) -> LoadError {
        LoadError {
            message,
            transformation: None,
        }
    }
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// The filter-config side of a config loaded outside Envoy (the CLI's path): every counter is
/// defined, as it would be while Envoy loads the config; nothing ever increments it.
pub struct OutsideEnvoy;

impl EnvoyFilterConfig for OutsideEnvoy {
    fn define_counter(&mut self, _name: &str) -> Result<CounterId, String> {
        Ok(CounterId(0))
    }
}
