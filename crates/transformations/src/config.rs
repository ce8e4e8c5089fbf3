//! The transformation JSON (kgateway TrafficPolicy `spec.transformation`), as received.
//!
//! The shape and what may be `null` or missing are kgateway v2.3's, measured by loading the same
//! configs into its module (`tests/diff`): unknown fields are ignored; `request`, `response`,
//! `body` and `stringValue` may be `null`; the lists, `value`, `parseAs` and the dynamic-metadata
//! entries' `namespace`, `key` and `value` may be missing but not `null` (the three of a metadata
//! entry may not be missing either); `parseAs` defaults to `AsString`. A JSON array is read the
//! way serde reads a struct from one, by position (`[]`, `[request]`, `[request, response]`).

use serde::{Deserialize, Deserializer};

use crate::error::{Error, ErrorKind};

/// The whole configuration: one optional transformation per side.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct TransformationConfig {
    #[serde(default, deserialize_with = "nullable")]
    pub request: Option<SideConfig>,
    #[serde(default, deserialize_with = "nullable")]
    pub response: Option<SideConfig>,
}

/// What to do to one side (request or response).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct SideConfig {
    #[serde(default)]
    pub set: Vec<NameValue>,
    #[serde(default)]
    pub add: Vec<NameValue>,
    #[serde(default)]
    pub remove: Vec<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub body: Option<BodyConfig>,
    #[serde(default, rename = "dynamicMetadata")]
    pub dynamic_metadata: Vec<DynamicMetadataConfig>,
}

/// A header name and its value (template); the control plane omits an empty value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct NameValue {
    pub name: String,
    #[serde(default)]
    pub value: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct BodyConfig {
    #[serde(default, rename = "parseAs")]
    pub parse_as: ParseAs,
    #[serde(default)]
    pub value: String,
}

/// How the body is read before templates run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum ParseAs {
    /// The body is available as `body()`.
    #[default]
    AsString,
    /// The body is parsed as JSON: object keys become variables, `context()` is the value.
    AsJson,
    /// The body is not buffered: header operations only, the body template is ignored.
    None,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct DynamicMetadataConfig {
    pub namespace: String,
    pub key: String,
    pub value: MetadataValue,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct MetadataValue {
    #[serde(default, rename = "stringValue", deserialize_with = "nullable")]
    pub string_value: String,
}

/// `null` means "absent" (serde's `default` alone only covers a missing field).
fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

impl TransformationConfig {
    /// Parses the configuration bytes. Errors say what and where: the JSON path of the
    /// offending field plus serde_json's line and column.
    pub fn from_json(bytes: &[u8]) -> Result<TransformationConfig, Error> {
        parse_json(bytes)
    }
}

/// Shared by every JSON config of this crate: UTF-8 check, then serde with the path.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        Error::new(
            ErrorKind::InvalidUtf8,
            format!(
                "config is not UTF-8 (invalid byte at offset {})",
                e.valid_up_to()
            ),
        )
    })?;
    // Most configs are valid: parse them at full speed, and only a refused one again with the
    // path tracking that names the offending field (a third of the parse's cost).
    if let Ok(value) = serde_json::from_str(text) {
        return Ok(value);
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let err = Error::new(ErrorKind::InvalidJson, e.into_inner().to_string());
        // `?` is serde_path_to_error's placeholder for a key it could not read: no location.
        if path.is_empty() || path == "." || path == "?" {
            err
        } else {
            err.at(path)
        }
    })?;
    // Trailing garbage after the object is an error too.
    de.end()
        .map_err(|e| Error::new(ErrorKind::InvalidJson, e.to_string()))?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_full_config() {
        let cfg = TransformationConfig::from_json(
            br#"{"request":{"set":[{"name":"x","value":"1"},{"name":"y"}],"add":[{"name":"a","value":"b"}],
                "remove":["r"],"body":{"parseAs":"AsJson","value":"{{ a }}"},
                "dynamicMetadata":[{"namespace":"ns","key":"k","value":{"stringValue":"v"}}]},
                "response":{"body":{"value":"x"}}, "unknown": 1}"#,
        )
        .unwrap();
        let req = cfg.request.unwrap();
        assert_eq!(req.set.len(), 2);
        assert_eq!(req.set[1].value, "");
        assert_eq!(req.body.as_ref().unwrap().parse_as, ParseAs::AsJson);
        assert_eq!(req.dynamic_metadata[0].value.string_value, "v");
        let resp = cfg.response.unwrap();
        assert_eq!(resp.body.unwrap().parse_as, ParseAs::AsString, "default");
    }

    #[test]
    fn empty_object_and_nulls() {
        assert_eq!(
            TransformationConfig::from_json(b"{}").unwrap(),
            TransformationConfig::default()
        );
        let cfg = TransformationConfig::from_json(
            br#"{"request":{"body":null,"dynamicMetadata":[{"namespace":"n","key":"k","value":{"stringValue":null}}]},"response":null}"#,
        )
        .unwrap();
        let request = cfg.request.unwrap();
        assert!(request.body.is_none());
        assert_eq!(request.dynamic_metadata[0].value.string_value, "");
        assert!(cfg.response.is_none());
    }

    #[test]
    fn nulls_and_missing_fields_kgateway_refuses() {
        for (config, path) in [
            (r#"{"request":{"set":null}}"#, "request.set"),
            (r#"{"request":{"remove":null}}"#, "request.remove"),
            (
                r#"{"response":{"dynamicMetadata":null}}"#,
                "response.dynamicMetadata",
            ),
            (
                r#"{"request":{"add":[{"name":"x","value":null}]}}"#,
                "request.add[0].value",
            ),
            (
                r#"{"request":{"body":{"parseAs":null}}}"#,
                "request.body.parseAs",
            ),
            (
                r#"{"request":{"body":{"value":null}}}"#,
                "request.body.value",
            ),
            (
                r#"{"request":{"dynamicMetadata":[{"key":"k","value":{}}]}}"#,
                "request.dynamicMetadata[0]",
            ),
            (
                r#"{"request":{"dynamicMetadata":[{"namespace":"n","key":"k"}]}}"#,
                "request.dynamicMetadata[0]",
            ),
            (
                r#"{"request":{"dynamicMetadata":[{"namespace":"n","key":null,"value":{}}]}}"#,
                "request.dynamicMetadata[0].key",
            ),
        ] {
            let err = TransformationConfig::from_json(config.as_bytes()).unwrap_err();
            assert_eq!(err.location(), Some(path), "{config}: {err}");
        }
    }

    #[test]
    fn an_array_reads_by_position() {
        for empty in ["[]", "[null]"] {
            assert_eq!(
                TransformationConfig::from_json(empty.as_bytes()).unwrap(),
                TransformationConfig::default(),
                "{empty}"
            );
        }
        let cfg = TransformationConfig::from_json(b"[{}, {}]").unwrap();
        assert_eq!(cfg.request, Some(SideConfig::default()));
        assert_eq!(cfg.response, Some(SideConfig::default()));
        let cfg = TransformationConfig::from_json(br#"[null, {"set":[{"name":"x","value":"1"}]}]"#)
            .unwrap();
        assert!(cfg.request.is_none());
        assert_eq!(cfg.response.unwrap().set[0].name, "x");
        assert!(TransformationConfig::from_json(b"[{}, {}, {}]").is_err());
    }

    #[test]
    fn unknown_parse_as_is_an_error_with_path() {
        let err =
            TransformationConfig::from_json(br#"{"response": {"body": {"parseAs": "AsXml"}}}"#)
                .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidJson);
        assert_eq!(err.location(), Some("response.body.parseAs"));
        assert!(err.message().contains("line 1"), "{err}");
    }

    #[test]
    fn wrong_type_names_path() {
        let err =
            TransformationConfig::from_json(br#"{"request": {"set": [{"name": 3}]}}"#).unwrap_err();
        assert_eq!(err.location(), Some("request.set[0].name"));
    }

    #[test]
    fn not_json_not_utf8_trailing() {
        assert_eq!(
            TransformationConfig::from_json(b"nope").unwrap_err().kind(),
            ErrorKind::InvalidJson
        );
        assert_eq!(
            TransformationConfig::from_json(b"{\"request\":\xff}")
                .unwrap_err()
                .kind(),
            ErrorKind::InvalidUtf8
        );
        assert_eq!(
            TransformationConfig::from_json(b"{} {}")
                .unwrap_err()
                .kind(),
            ErrorKind::InvalidJson
        );
        assert!(TransformationConfig::from_json(b"").is_err());
        // A broken key has no field path to name.
        let err = TransformationConfig::from_json(b"{oops").unwrap_err();
        assert_eq!((err.kind(), err.location()), (ErrorKind::InvalidJson, None));
        assert!(TransformationConfig::from_json(b"null").is_err());
        assert!(TransformationConfig::from_json(b"\"str\"").is_err());
    }
}
