//! The Envoy this build targets, chosen by cargo feature, and the ABI string it expects.

#[cfg(all(
    feature = "envoy-1-36",
    any(feature = "envoy-1-38", feature = "envoy-1-40")
))]
compile_error!(
    "envoy-module: more than one Envoy target feature is enabled (envoy-1-36 with envoy-1-38 or envoy-1-40); pick one"
);
#[cfg(all(feature = "envoy-1-38", feature = "envoy-1-40"))]
compile_error!("envoy-module: both envoy-1-38 and envoy-1-40 are enabled; pick one");
#[cfg(not(any(
    feature = "envoy-1-36",
    feature = "envoy-1-37",
    feature = "envoy-1-38",
    feature = "envoy-1-40"
)))]
compile_error!(
    "envoy-module: enable one Envoy target feature: envoy-1-36, envoy-1-37, envoy-1-38 or envoy-1-40"
);

// envoy-1-37 is the default feature, so every other target wins over it.
#[cfg(feature = "envoy-1-36")]
mod chosen {
    pub const ENVOY: &str = "1.36 (1.36.3/1.36.4)";
    /// Hash of the 1.36.3/1.36.4 ABI header; 1.36 refuses any other value.
    pub const ABI: &str = "7ee559f16f35086fa7dc9ed380e2efc6b4d89031a001fb504aa71eccd25882f7";
}
#[cfg(all(feature = "envoy-1-40", not(feature = "envoy-1-36")))]
mod chosen {
    pub const ENVOY: &str = "1.40";
    pub const FAMILY: &str = "1.40";
    pub const ABI: &str = "v0.2.0";
}
#[cfg(all(
    feature = "envoy-1-38",
    not(any(feature = "envoy-1-36", feature = "envoy-1-40"))
))]
mod chosen {
    pub const ENVOY: &str = "1.38/1.39";
    pub const FAMILY: &str = "1.38";
    pub const ABI: &str = "v0.1.0";
}
#[cfg(all(
    feature = "envoy-1-37",
    not(any(feature = "envoy-1-36", feature = "envoy-1-38", feature = "envoy-1-40"))
))]
mod chosen {
    pub const ENVOY: &str = "1.37";
    pub const FAMILY: &str = "1.37";
    /// Hash of the 1.37.0 ABI header; 1.37 refuses any other value.
    pub const ABI: &str = "4dae397a7c9ff0238d318d57ea656ce8b3fbff595787dcd7ee2ff5b79c9fe10f";
}

/// The Envoy version(s) this build targets, e.g. `"1.37"`.
pub fn target_envoy() -> &'static str {
    chosen::ENVOY
}

/// The ABI version string `on_program_init` returns: `ENVOY_ABI_VERSION` at build time if set,
/// else the target's.
pub fn abi_version() -> &'static str {
    match option_env!("ENVOY_ABI_VERSION") {
        Some(v) if !v.is_empty() => v,
        _ => chosen::ABI,
    }
}

/// Callbacks that first appeared in an Envoy minor of the unified (1.37+) API and are still
/// exported by 1.40.0, newest first: the first one present names the running Envoy's release.
/// Checked against the exports of 1.37.0, 1.38.3, 1.39.3 and 1.40.0 (1.39 added callbacks too,
/// `http_get_header_values` among them, so a 1.40 marker must be one 1.39.3 lacks).
#[cfg(not(feature = "envoy-1-36"))]
const FAMILY_MARKERS: &[(&str, &std::ffi::CStr)] = &[
    (
        "1.40",
        c"envoy_dynamic_module_callback_http_get_upstream_remote_address",
    ),
    (
        "1.38",
        c"envoy_dynamic_module_callback_http_filter_get_worker_index",
    ),
];

/// The unified-API release ("1.37", "1.38" for 1.38/1.39, "1.40") whose callbacks the running
/// process exports, given a symbol lookup.
#[cfg(not(feature = "envoy-1-36"))]
pub(crate) fn running_family(exported: impl Fn(&std::ffi::CStr) -> bool) -> &'static str {
    FAMILY_MARKERS
        .iter()
        .find(|(_, marker)| exported(marker))
        .map_or("1.37", |(family, _)| family)
}

/// The line to print when the module runs in another release than it was built for. Envoy's own
/// report is unhelpful there: 1.37.0 says the module was "not found", 1.38+ only warns.
#[cfg(not(feature = "envoy-1-36"))]
pub(crate) fn family_mismatch(running: &str) -> Option<String> {
    if running == chosen::FAMILY {
        return None;
    }
    let consequence = if running == "1.37" {
        "Envoy 1.37 refuses any other ABI version (it reports the module as not found)"
    } else {
        "Envoy only warns about the ABI version; the API may differ"
    };
    Some(format!(
        "rust_module: this module was built for Envoy {} (ABI version {}) but this Envoy exports the callbacks of Envoy {running}; {consequence}; rebuild with ENVOY_VERSION={running}.x (tools/envoy-abi <envoy> prints the exact ABI string)",
        chosen::ENVOY,
        abi_version(),
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn abi_string_has_no_nul() {
        assert!(!super::abi_version().contains('\0'));
        assert!(!super::abi_version().is_empty());
    }

    #[cfg(not(feature = "envoy-1-36"))]
    #[test]
    fn running_family_follows_the_newest_marker_present() {
        use super::running_family;
        let exports = |names: &'static [&'static str]| {
            move |name: &std::ffi::CStr| names.iter().any(|n| name.to_bytes() == n.as_bytes())
        };
        assert_eq!(running_family(exports(&[])), "1.37");
        let v138 = &["envoy_dynamic_module_callback_http_filter_get_worker_index"];
        assert_eq!(running_family(exports(v138)), "1.38");
        // 1.39 adds callbacks of its own but is still the 1.38 family.
        let v139 = &[
            "envoy_dynamic_module_callback_http_filter_get_worker_index",
            "envoy_dynamic_module_callback_http_get_header_values",
        ];
        assert_eq!(running_family(exports(v139)), "1.38");
        let v140 = &[
            "envoy_dynamic_module_callback_http_filter_get_worker_index",
            "envoy_dynamic_module_callback_http_get_header_values",
            "envoy_dynamic_module_callback_http_get_upstream_remote_address",
        ];
        assert_eq!(running_family(exports(v140)), "1.40");
    }

    #[cfg(not(feature = "envoy-1-36"))]
    #[test]
    fn a_family_mismatch_names_the_rebuild() {
        use super::{chosen, family_mismatch};
        assert_eq!(family_mismatch(chosen::FAMILY), None);
        for running in ["1.37", "1.38", "1.40"] {
            if running == chosen::FAMILY {
                continue;
            }
            let line = family_mismatch(running).expect("another release");
            assert!(
                line.contains(&format!("built for Envoy {}", chosen::ENVOY)),
                "{line}"
            );
            assert!(
                line.contains(&format!("rebuild with ENVOY_VERSION={running}.x")),
                "{line}"
            );
            assert!(line.contains(super::abi_version()), "{line}");
        }
    }
}
