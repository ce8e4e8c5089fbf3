//! The Envoy releases the module serves, how the running one is recognised, and the ABI version
//! string each expects.
//!
//! One build serves every supported Envoy. At `on_program_init` the module looks at which
//! callbacks the process exports and picks the API family and ABI string from that alone:
//!
//! | exported by the process | family | ABI string returned |
//! |---|---|---|
//! | `http_get_request_header` (per-direction API) | 1.36 (1.36.3, 1.36.4) | the 1.36.3 header hash |
//! | `http_get_header` (unified API), none of the markers below | 1.37 | the 1.37.0 header hash |
//! | ... and `http_filter_get_worker_index` | 1.38 (1.38.x, 1.39.x) | `v0.1.0` |
//! | ... and `http_get_upstream_remote_address` | 1.40 | `v0.2.0` |
//!
//! (callback names without their `envoy_dynamic_module_callback_` prefix). The markers were
//! checked against the exports of 1.36.3, 1.36.4, 1.37.0, 1.38.3, 1.39.3 and 1.40.0: each first
//! appeared in the release it marks and is still exported by 1.40.0 (1.39 added callbacks too,
//! `http_get_header_values` among them, so the 1.40 marker is one 1.39.3 lacks).
//!
//! The environment variable [`ABI_OVERRIDE_ENV`] of the Envoy process replaces the ABI string
//! (for a patch release whose string differs); the API family is still detected.

use std::ffi::CStr;

/// The shape of Envoy's C API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Api {
    /// 1.36: one callback per direction and map, `{ptr, len}` passed as two arguments.
    PerDirection,
    /// 1.37+: one callback with a header-map or body selector, `{ptr, len}` structs.
    Unified,
}

/// A group of Envoy releases that take the same callbacks and the same ABI string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Envoy 1.36.3 and 1.36.4.
    V1_36,
    /// Envoy 1.37.x.
    V1_37,
    /// Envoy 1.38.x and 1.39.x.
    V1_38,
    /// Envoy 1.40.x.
    V1_40,
}

/// Every Envoy release this module serves, for messages.
pub const SUPPORTED: &str = "Envoy 1.36.3, 1.36.4, 1.37.x, 1.38.x, 1.39.x and 1.40.x";

/// Environment variable of the Envoy process that names the ABI version string to return instead
/// of the detected family's (`tools/envoy-abi <envoy>` prints the one a binary expects).
pub const ABI_OVERRIDE_ENV: &str = "ENVOY_ABI_VERSION";

impl Family {
    /// Every family, oldest first.
    pub const ALL: [Family; 4] = [Family::V1_36, Family::V1_37, Family::V1_38, Family::V1_40];

    /// Short name: `"1.36"`, `"1.37"`, `"1.38"` (1.38 and 1.39) or `"1.40"`.
    pub fn name(self) -> &'static str {
        match self {
            Family::V1_36 => "1.36",
            Family::V1_37 => "1.37",
            Family::V1_38 => "1.38",
            Family::V1_40 => "1.40",
        }
    }

    /// The releases of the family, for messages.
    pub fn releases(self) -> &'static str {
        match self {
            Family::V1_36 => "1.36.3/1.36.4",
            Family::V1_37 => "1.37.x",
            Family::V1_38 => "1.38.x/1.39.x",
            Family::V1_40 => "1.40.x",
        }
    }

    /// The ABI version string the family's Envoy expects from `on_program_init`.
    pub fn abi_version(self) -> &'static str {
        match self {
            // Hash of the 1.36.3/1.36.4 ABI header; 1.36 refuses any other value.
            Family::V1_36 => "7ee559f16f35086fa7dc9ed380e2efc6b4d89031a001fb504aa71eccd25882f7",
            // Hash of the 1.37.0 ABI header; 1.37.0 refuses any other value.
            Family::V1_37 => "4dae397a7c9ff0238d318d57ea656ce8b3fbff595787dcd7ee2ff5b79c9fe10f",
            Family::V1_38 => "v0.1.0",
            Family::V1_40 => "v0.2.0",
        }
    }

    pub(crate) fn api(self) -> Api {
        match self {
            Family::V1_36 => Api::PerDirection,
            _ => Api::Unified,
        }
    }

    /// Names of the `envoy_dynamic_module_callback_*` symbols the module resolves in an Envoy of
    /// this family at load time.
    pub fn required_callbacks(self) -> &'static [&'static str] {
        match self.api() {
            Api::PerDirection => crate::abi_1_36::CALLBACK_NAMES,
            Api::Unified => crate::abi_1_37::CALLBACK_NAMES,
        }
    }
}

/// Present only in the unified (1.37+) API.
const UNIFIED_MARKER: &CStr = c"envoy_dynamic_module_callback_http_get_header";
/// Present only in the per-direction (1.36) API.
const PER_DIRECTION_MARKER: &CStr = c"envoy_dynamic_module_callback_http_get_request_header";
/// Callbacks that first appeared in a release of the unified API, newest first.
const RELEASE_MARKERS: &[(Family, &CStr)] = &[
    (
        Family::V1_40,
        c"envoy_dynamic_module_callback_http_get_upstream_remote_address",
    ),
    (
        Family::V1_38,
        c"envoy_dynamic_module_callback_http_filter_get_worker_index",
    ),
];

/// The family of the running Envoy, given a symbol lookup; None when the process exports neither
/// API's callbacks.
pub(crate) fn detect(exported: impl Fn(&CStr) -> bool) -> Option<Family> {
    if exported(UNIFIED_MARKER) {
        let release = RELEASE_MARKERS.iter().find(|(_, marker)| exported(marker));
        return Some(release.map_or(Family::V1_37, |(family, _)| *family));
    }
    if exported(PER_DIRECTION_MARKER) {
        return Some(Family::V1_36);
    }
    None
}

/// The ABI string to return: the override when set (and non-empty), else the family's. The second
/// value tells whether the override was used.
pub(crate) fn chosen_abi(family: Family, override_value: Option<String>) -> (String, bool) {
    match override_value {
        Some(v) if !v.is_empty() && !v.contains('\0') => (v, true),
        _ => (family.abi_version().to_string(), false),
    }
}

/// The one line printed when the module refuses to serve this Envoy: the family as detected, what
/// is supported, and the override.
pub(crate) fn refusal(family: Option<Family>, missing: &[&str]) -> String {
    let detected = match family {
        None => format!(
            "this Envoy exports neither {} (1.37+ API) nor {} (1.36 API), so its dynamic-module API family is unknown",
            UNIFIED_MARKER.to_string_lossy(),
            PER_DIRECTION_MARKER.to_string_lossy(),
        ),
        Some(family) => {
            let more = match missing.len() {
                0 | 1 => String::new(),
                n if n <= 4 => format!(" and {} more ({})", n - 1, missing[1..].join(", ")),
                n => format!(" and {} more ({}, ...)", n - 1, missing[1..4].join(", ")),
            };
            let why = if family == Family::V1_36 {
                " (Envoy before 1.36.3 has an older body API)"
            } else {
                " (a release this module does not know)"
            };
            format!(
                "this Envoy speaks the API family of Envoy {} but does not export {}{more}{why}",
                family.name(),
                missing.first().copied().unwrap_or("?"),
            )
        }
    };
    format!(
        "rust_module: refusing to load: {detected}; supported: {SUPPORTED}; {ABI_OVERRIDE_ENV}=<string> only replaces the ABI version string (tools/envoy-abi <envoy> prints the one a binary expects), not the API"
    )
}

/// The line logged when the module accepted this Envoy.
pub(crate) fn accepted(family: Family, abi: &str, overridden: bool) -> String {
    let source = if overridden {
        format!(
            " from {ABI_OVERRIDE_ENV} (the family's own is {})",
            family.abi_version()
        )
    } else {
        String::new()
    };
    format!(
        "rust_module: Envoy API family {} ({}) detected; returning ABI version {abi}{source}",
        family.name(),
        family.releases(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exports(names: &'static [&'static str]) -> impl Fn(&CStr) -> bool {
        move |name: &CStr| names.iter().any(|n| name.to_bytes() == n.as_bytes())
    }

    #[test]
    fn the_family_follows_the_exported_callbacks() {
        assert_eq!(detect(exports(&[])), None);
        let v136 = &["envoy_dynamic_module_callback_http_get_request_header"];
        assert_eq!(detect(exports(v136)), Some(Family::V1_36));
        let v137 = &["envoy_dynamic_module_callback_http_get_header"];
        assert_eq!(detect(exports(v137)), Some(Family::V1_37));
        let v138 = &[
            "envoy_dynamic_module_callback_http_get_header",
            "envoy_dynamic_module_callback_http_filter_get_worker_index",
        ];
        assert_eq!(detect(exports(v138)), Some(Family::V1_38));
        // 1.39 adds callbacks of its own but is still the 1.38 family.
        let v139 = &[
            "envoy_dynamic_module_callback_http_get_header",
            "envoy_dynamic_module_callback_http_filter_get_worker_index",
            "envoy_dynamic_module_callback_http_get_header_values",
        ];
        assert_eq!(detect(exports(v139)), Some(Family::V1_38));
        let v140 = &[
            "envoy_dynamic_module_callback_http_get_header",
            "envoy_dynamic_module_callback_http_filter_get_worker_index",
            "envoy_dynamic_module_callback_http_get_header_values",
            "envoy_dynamic_module_callback_http_get_upstream_remote_address",
        ];
        assert_eq!(detect(exports(v140)), Some(Family::V1_40));
        // A release marker alone, without the unified API, is not a family we know.
        let odd = &["envoy_dynamic_module_callback_http_get_upstream_remote_address"];
        assert_eq!(detect(exports(odd)), None);
    }

    #[test]
    fn abi_strings_are_distinct_and_clean() {
        for family in Family::ALL {
            let abi = family.abi_version();
            assert!(!abi.is_empty() && !abi.contains('\0'));
            assert!(!family.required_callbacks().is_empty());
        }
        assert_eq!(Family::V1_38.abi_version(), "v0.1.0");
        assert_eq!(Family::V1_40.abi_version(), "v0.2.0");
    }

    #[test]
    fn the_override_replaces_only_a_usable_string() {
        let f = Family::V1_37;
        assert_eq!(chosen_abi(f, None), (f.abi_version().to_string(), false));
        assert_eq!(
            chosen_abi(f, Some(String::new())),
            (f.abi_version().to_string(), false)
        );
        assert_eq!(
            chosen_abi(f, Some("v9.9.9".into())),
            ("v9.9.9".to_string(), true)
        );
        let line = accepted(f, "v9.9.9", true);
        assert!(
            line.contains("family 1.37") && line.contains("v9.9.9"),
            "{line}"
        );
        assert!(line.contains(ABI_OVERRIDE_ENV), "{line}");
        assert!(!accepted(f, f.abi_version(), false).contains(ABI_OVERRIDE_ENV));
    }

    #[test]
    fn a_refusal_is_one_line_naming_family_support_and_override() {
        for (family, missing) in [
            (None, &[][..]),
            (
                Some(Family::V1_36),
                &["envoy_dynamic_module_callback_http_get_received_request_body_vector"][..],
            ),
            (Some(Family::V1_40), &["a", "b", "c"][..]),
        ] {
            let line = refusal(family, missing);
            assert!(!line.contains('\n'), "{line}");
            assert!(line.contains(SUPPORTED), "{line}");
            assert!(line.contains(ABI_OVERRIDE_ENV), "{line}");
            match family {
                None => assert!(line.contains("family is unknown"), "{line}"),
                Some(f) => {
                    assert!(
                        line.contains(&format!("family of Envoy {}", f.name())),
                        "{line}"
                    );
                    assert!(line.contains(missing[0]), "{line}");
                }
            }
        }
        assert!(refusal(Some(Family::V1_40), &["a", "b", "c"]).contains("and 2 more (b, c)"));
        let many = refusal(Some(Family::V1_36), &["a", "b", "c", "d", "e", "f"]);
        assert!(many.contains("and 5 more (b, c, d, ...)"), "{many}");
    }
}
