//! Which kgateway release the transformation filters behave like, decided once per process.
//!
//! kgateway v2.3 ships Envoy 1.37 (v2.2 ships 1.36) and v2.4 ships Envoy 1.38, so the Envoy the
//! module runs in names the release: v2.3 semantics on 1.36 and 1.37, v2.4's on 1.38 and later.
//! A team that pairs them otherwise sets [`RELEASE_ENV`] in the Envoy process environment
//! (GatewayParameters `envoyContainer.env`). The choice and its reason are logged once.

use std::sync::OnceLock;

use envoy_module::Family;
use transformations::KgatewayRelease;

/// Environment variable of the Envoy process that overrides the release: `v2.3` or `v2.4`.
pub const RELEASE_ENV: &str = "RUSTFORMATION_KGATEWAY_VERSION";

/// The release whose module ships the given Envoy.
pub fn release_for(family: Family) -> KgatewayRelease {
    match family {
        Family::V1_36 | Family::V1_37 => KgatewayRelease::V2_3,
        Family::V1_38 | Family::V1_40 => KgatewayRelease::V2_4,
    }
}

/// The release to follow and the line that says why, or why the override is unusable.
pub fn choose(
    family: Option<Family>,
    setting: Option<&str>,
) -> Result<(KgatewayRelease, String), String> {
    if let Some(setting) = setting.filter(|s| !s.trim().is_empty()) {
        let release = KgatewayRelease::from_name(setting).ok_or_else(|| {
            format!("{RELEASE_ENV}={setting:?} is not a kgateway release this module follows; use v2.3 or v2.4")
        })?;
        return Ok((
            release,
            format!("following kgateway {release} semantics ({RELEASE_ENV}={setting})"),
        ));
    }
    let release = family.map_or(KgatewayRelease::default(), release_for);
    let shipped = match release {
        KgatewayRelease::V2_3 => "kgateway v2.2 and v2.3 ship Envoy 1.36 and 1.37",
        KgatewayRelease::V2_4 => "kgateway v2.4 ships Envoy 1.38, its semantics hold from 1.38 on",
    };
    let why = match family {
        Some(family) => format!(
            "detected Envoy {}; {shipped}; set {RELEASE_ENV}=v2.3 or v2.4 to change",
            family.releases()
        ),
        None => "no Envoy detected".to_owned(),
    };
    Ok((
        release,
        format!("following kgateway {release} semantics ({why})"),
    ))
}

/// The release of this process, chosen and logged on first use.
pub fn current() -> Result<KgatewayRelease, String> {
    static CHOSEN: OnceLock<Result<KgatewayRelease, String>> = OnceLock::new();
    CHOSEN
        .get_or_init(|| {
            let setting = std::env::var(RELEASE_ENV).ok();
            let (release, line) = choose(envoy_module::running_family(), setting.as_deref())?;
            envoy_module::log_info!("rust_module: {line}");
            Ok(release)
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_envoy_picks_the_release_that_ships_it() {
        let chosen = |family| choose(Some(family), None).unwrap().0;
        assert_eq!(chosen(Family::V1_36), KgatewayRelease::V2_3);
        assert_eq!(chosen(Family::V1_37), KgatewayRelease::V2_3);
        assert_eq!(chosen(Family::V1_38), KgatewayRelease::V2_4);
        assert_eq!(chosen(Family::V1_40), KgatewayRelease::V2_4);
        let (_, line) = choose(Some(Family::V1_38), None).unwrap();
        assert_eq!(
            line,
            "following kgateway v2.4 semantics (detected Envoy 1.38.x/1.39.x; kgateway v2.4 ships \
             Envoy 1.38, its semantics hold from 1.38 on; set RUSTFORMATION_KGATEWAY_VERSION=v2.3 \
             or v2.4 to change)"
        );
        let (_, line) = choose(Some(Family::V1_37), None).unwrap();
        assert!(
            line.starts_with("following kgateway v2.3 semantics (detected Envoy 1.37.x;"),
            "{line}"
        );
    }

    #[test]
    fn the_environment_overrides_the_envoy() {
        for (setting, want) in [
            ("v2.3", KgatewayRelease::V2_3),
            ("2.4", KgatewayRelease::V2_4),
            ("v2.4.1", KgatewayRelease::V2_4),
            ("v2.2", KgatewayRelease::V2_3),
        ] {
            let (release, line) = choose(Some(Family::V1_40), Some(setting)).unwrap();
            assert_eq!(release, want, "{setting}");
            assert!(line.contains(setting), "{line}");
        }
        assert_eq!(
            choose(Some(Family::V1_37), Some("")).unwrap().0,
            KgatewayRelease::V2_3,
            "an empty setting is no setting"
        );
    }

    #[test]
    fn an_unknown_release_is_refused_with_its_value() {
        let err = choose(Some(Family::V1_37), Some("v3")).unwrap_err();
        assert_eq!(
            err,
            "RUSTFORMATION_KGATEWAY_VERSION=\"v3\" is not a kgateway release this module follows; use v2.3 or v2.4"
        );
    }
}
