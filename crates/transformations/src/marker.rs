//! The header that proves a response went through our `rustformation` filter.
//!
//! Default `X-Custom-Transformed: true`. The Envoy process environment changes it without a
//! rebuild: `RUSTFORMATION_MARKER_HEADER="Name: value"`, or an empty value (or `off`) to send none.

pub const MARKER_ENV: &str = "RUSTFORMATION_MARKER_HEADER";
pub const DEFAULT_MARKER: &str = "X-Custom-Transformed: true";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker {
    pub name: String,
    pub value: String,
}

/// The marker this process's environment asks for, read once: Envoy's environment is fixed when
/// it starts, and every route config asks (reading and parsing it again cost a route config as
/// much as compiling one of its lowered values).
pub fn of_process() -> Result<Option<Marker>, String> {
    static SETTING: std::sync::OnceLock<Result<Option<Marker>, String>> =
        std::sync::OnceLock::new();
    SETTING.get_or_init(from_env).clone()
}

/// The marker the environment asks for now; `Err` says why the setting is unusable.
pub fn from_env() -> Result<Option<Marker>, String> {
    parse(
        std::env::var(MARKER_ENV)
            .ok()
            .as_deref()
            .unwrap_or(DEFAULT_MARKER),
    )
}

pub fn parse(setting: &str) -> Result<Option<Marker>, String> {
    let setting = setting.trim();
    if setting.is_empty() || setting.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    let (name, value) = setting
        .split_once(':')
        .ok_or_else(|| format!("{MARKER_ENV}={setting:?} is not \"Name: value\""))?;
    let (name, value) = (name.trim(), value.trim());
    let is_token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    };
    if !is_token(name) {
        return Err(format!("{MARKER_ENV}: {name:?} is not a valid header name"));
    }
    if value.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
        return Err(format!("{MARKER_ENV}: the value holds control characters"));
    }
    Ok(Some(Marker {
        name: name.to_ascii_lowercase(),
        value: value.to_string(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_marker_is_the_labs_header() {
        assert_eq!(
            parse(DEFAULT_MARKER).unwrap(),
            Some(Marker {
                name: "x-custom-transformed".into(),
                value: "true".into()
            })
        );
    }

    #[test]
    fn empty_or_off_disables_the_marker() {
        assert_eq!(parse("").unwrap(), None);
        assert_eq!(parse("  off ").unwrap(), None);
    }

    #[test]
    fn custom_marker_and_bad_settings() {
        assert_eq!(
            parse("X-Via: team-a").unwrap(),
            Some(Marker {
                name: "x-via".into(),
                value: "team-a".into()
            })
        );
        assert!(parse("no colon").is_err());
        assert!(parse("bad name: v").is_err());
        assert!(parse("x: a\u{7f}").is_err());
    }
}
