//! Config structs read from a JSON object only. serde reads a struct from a JSON array too (its
//! fields by position), so `[1]` would pass for `{"max_bytes": 1}` even with
//! `#[serde(deny_unknown_fields)]`.

use serde::de::{DeserializeOwned, Error};

/// `serde_json::from_slice`, refusing any JSON value but an object with one line that names
/// what was found instead.
pub fn from_slice<T: DeserializeOwned>(json: &[u8]) -> Result<T, serde_json::Error> {
    match json.iter().find(|b| !b.is_ascii_whitespace()) {
        // An empty config keeps serde_json's own "EOF while parsing" message.
        Some(b'{') | None => serde_json::from_slice(json),
        Some(_) => {
            let found = match serde_json::from_slice(json)? {
                serde_json::Value::Array(_) => "an array",
                serde_json::Value::String(_) => "a string",
                serde_json::Value::Number(_) => "a number",
                serde_json::Value::Bool(_) => "a boolean",
                serde_json::Value::Null => "null",
                serde_json::Value::Object(_) => "an object",
            };
            Err(serde_json::Error::custom(format!(
                "expected a JSON object, found {found}"
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::from_slice;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Settings {
        n: u64,
    }

    #[test]
    fn an_object_is_read_as_serde_reads_it() {
        assert_eq!(from_slice::<Settings>(b" \n{\"n\": 3}").unwrap().n, 3);
        let err = from_slice::<Settings>(b"{\"n\": 3, \"m\": 1}").unwrap_err();
        assert!(err.to_string().contains("unknown field `m`"), "{err}");
        assert!(from_slice::<Settings>(b"").is_err());
    }

    #[test]
    fn any_other_json_value_is_refused_with_one_line_naming_it() {
        for (json, found) in [
            ("[1]", "an array"),
            ("\"x\"", "a string"),
            ("1", "a number"),
            ("true", "a boolean"),
            ("null", "null"),
        ] {
            let err = from_slice::<Settings>(json.as_bytes()).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("expected a JSON object, found {found}")
            );
        }
        // Not JSON at all: serde_json's own message.
        let err = from_slice::<Settings>(b"[1").unwrap_err();
        assert!(err.to_string().contains("EOF"), "{err}");
    }
}
