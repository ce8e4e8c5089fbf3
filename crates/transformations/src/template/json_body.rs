//! A JSON body as template variables (`parseAs: AsJson`): serde visitors that convert only the
//! top-level keys a template can name, checking the rest without building it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use minijinja::value::Value;

/// Converts a parsed JSON body into a template value. serde_json's recursion limit (128)
/// bounds the depth, so this recursion is bounded too.
/// Parses a JSON body for rendering; `None` for `null`. Unless `whole`, only the top-level
/// keys in `names` (the only ones a template can look up) are converted: the rest is checked
/// by the parser (syntax, the 128-level nesting limit) and skipped without allocating, which
/// is most of the cost of a large body.
pub(crate) fn parse_json_body(
    body: &[u8],
    names: &BTreeSet<String>,
    whole: bool,
) -> Result<Option<Value>, serde_json::Error> {
    if whole {
        let parsed: serde_json::Value = serde_json::from_slice(body)?;
        return Ok((!parsed.is_null()).then(|| json_to_value(&parsed)));
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde::de::DeserializeSeed::deserialize(TopLevel { names }, &mut de)?;
    de.end()?;
    Ok(value)
}

/// The top level of a JSON body, keeping only the named keys of an object.
struct TopLevel<'a> {
    names: &'a BTreeSet<String>,
}

impl<'de> serde::de::DeserializeSeed<'de> for TopLevel<'_> {
    type Value = Option<Value>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Option<Value>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for TopLevel<'_> {
    type Value = Option<Value>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = BTreeMap::new();
        while let Some(key) = map.next_key_seed(KeyFilter { names: self.names })? {
            match key {
                Some(key) => {
                    let v: serde_json::Value = map.next_value()?;
                    // A repeated key: the last one wins, as in a full parse.
                    out.insert(key, json_to_value(&v));
                }
                None => map.next_value::<Skip>().map(drop)?,
            }
        }
        Ok(Some(Value::from(out)))
    }

    // Not an object: there are no variables, and nothing reads the value as a whole.
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(Some(Value::from(Vec::<Value>::new())))
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Some(Value::from(v)))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Some(Value::from(v)))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Some(Value::from(v)))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Some(Value::from(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Some(Value::from(v)))
    }
}

/// An object key: `Some(key)` when a template names it, without allocating for the others.
struct KeyFilter<'a> {
    names: &'a BTreeSet<String>,
}

impl<'de> serde::de::DeserializeSeed<'de> for KeyFilter<'_> {
    type Value = Option<String>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Option<String>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> serde::de::Visitor<'de> for KeyFilter<'_> {
    type Value = Option<String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(self.names.contains(v).then(|| v.to_owned()))
    }
}

/// Any JSON value, checked and dropped. Unlike `IgnoredAny` it goes through the parser's
/// nesting limit, so a body too deep for a full parse is refused here too.
struct Skip;

impl<'de> serde::Deserialize<'de> for Skip {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Skip, D::Error> {
        d.deserialize_any(Skip)
    }
}

impl<'de> serde::de::Visitor<'de> for Skip {
    type Value = Skip;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Skip, A::Error> {
        while map.next_entry::<Skip, Skip>()?.is_some() {}
        Ok(Skip)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Skip, A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(Skip)
    }

    fn visit_unit<E>(self) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_str<E>(self, _: &str) -> Result<Skip, E> {
        Ok(Skip)
    }
}

fn json_to_value(v: &serde_json::Value) -> Value {
    match v {
        serde_json::Value::Null => Value::from(()),
        serde_json::Value::Bool(b) => Value::from(*b),
        serde_json::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                Value::from(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        serde_json::Value::String(s) => Value::from(s.as_str()),
        serde_json::Value::Array(a) => Value::from(a.iter().map(json_to_value).collect::<Vec<_>>()),
        serde_json::Value::Object(m) => Value::from(
            m.iter()
                .map(|(k, v)| (k.clone(), json_to_value(v)))
                .collect::<BTreeMap<String, Value>>(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn partial_json_parse_keeps_only_named_keys_and_matches_a_full_parse() {
        let body = br#"{"user":"a","skip":{"deep":[1,2,{"x":"\u00e9"}]},"n":3,"user":"b","m":[1]}"#;
        let want = names(&["user", "n", "m", "absent"]);
        let partial = parse_json_body(body, &want, false).unwrap().unwrap();
        let whole = parse_json_body(body, &want, true).unwrap().unwrap();
        for key in ["user", "n", "m"] {
            assert_eq!(
                partial.get_attr(key).unwrap(),
                whole.get_attr(key).unwrap(),
                "{key}"
            );
        }
        assert_eq!(
            partial.get_attr("user").unwrap().as_str(),
            Some("b"),
            "last key wins"
        );
        assert!(partial.get_attr("skip").unwrap().is_undefined());
        assert!(!whole.get_attr("skip").unwrap().is_undefined());
        assert_eq!(parse_json_body(b"null", &want, false).unwrap(), None);
        assert!(parse_json_body(b"[1,{}]", &want, false).unwrap().is_some());
    }

    #[test]
    fn partial_json_parse_still_rejects_what_a_full_parse_rejects() {
        let want = names(&["a"]);
        let deep = format!(r#"{{"a":1,"b":{}{}}}"#, "[".repeat(200), "]".repeat(200));
        let bad: [&[u8]; 4] = [
            b"{\"a\":1,\"b\":[1,}",
            deep.as_bytes(),
            b"{\"a\":1} x",
            b"{\"b\":tru}",
        ];
        for body in bad {
            assert!(parse_json_body(body, &want, true).is_err());
            assert!(
                parse_json_body(body, &want, false).is_err(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
