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
    pub const ABI: &str = "v0.2.0";
}
#[cfg(all(
    feature = "envoy-1-38",
    not(any(feature = "envoy-1-36", feature = "envoy-1-40"))
))]
mod chosen {
    pub const ENVOY: &str = "1.38/1.39";
    pub const ABI: &str = "v0.1.0";
}
#[cfg(all(
    feature = "envoy-1-37",
    not(any(feature = "envoy-1-36", feature = "envoy-1-38", feature = "envoy-1-40"))
))]
mod chosen {
    pub const ENVOY: &str = "1.37";
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

#[cfg(test)]
mod tests {
    #[test]
    fn abi_string_has_no_nul() {
        assert!(!super::abi_version().contains('\0'));
        assert!(!super::abi_version().is_empty());
    }
}
