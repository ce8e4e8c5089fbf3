//! The `my-smart-header` filter's configuration: "set these headers", with defaults.
//!
//! ```json
//! {"response_headers": [{"name": "x-served-by", "value": "%REQ(:authority)%"}],
//!  "request_headers":  [{"name": "x-trace", "value": "{{ replace_with_random(\"id-R\", \"R\") }}"}]}
//! ```
//! Both lists are optional; `{}` (or an empty config) gives the defaults. Values use the
//! same syntax as transformation values (Jinja, command operators). The response always gets
//! the default headers `X-Custom-Transformed: true` and
//! `X-Smart-Header: method=%REQ(:METHOD)%&path=%REQ(:PATH)%`; an entry whose name equals a
//! default (case-insensitive) replaces it in place, and an empty value removes the header
//! instead. Each list is applied as `set` operations, in order.

use serde::Deserialize;

use crate::apply::Transformation;
use crate::config::{NameValue, SideConfig, TransformationConfig, parse_json};
use crate::error::{Error, ErrorKind};
use crate::template::Options;

/// Default response headers, in order.
pub const DEFAULT_RESPONSE_HEADERS: [(&str, &str); 2] = [
    ("x-custom-transformed", "true"),
    ("x-smart-header", "method=%REQ(:METHOD)%&path=%REQ(:PATH)%"),
];

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct SmartHeaderConfig {
    #[serde(default)]
    pub response_headers: Vec<NameValue>,
    #[serde(default)]
    pub request_headers: Vec<NameValue>,
}

impl SmartHeaderConfig {
    /// Parses the JSON; empty or whitespace-only input means `{}`.
    pub fn from_json(bytes: &[u8]) -> Result<SmartHeaderConfig, Error> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(SmartHeaderConfig::default());
        }
        // serde would also read a struct from an array, by position; this config is ours and
        // always an object.
        if bytes.trim_ascii_start().first() != Some(&b'{') {
            return Err(Error::new(ErrorKind::InvalidJson, "expected a JSON object"));
        }
        parse_json(bytes)
    }

    /// The equivalent transformation configuration (defaults merged in).
    pub fn to_transformation_config(&self) -> TransformationConfig {
        let mut response: Vec<NameValue> = DEFAULT_RESPONSE_HEADERS
            .iter()
            .map(|(n, v)| NameValue {
                name: (*n).to_owned(),
                value: (*v).to_owned(),
            })
            .collect();
        for nv in &self.response_headers {
            let is_default = DEFAULT_RESPONSE_HEADERS
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case(&nv.name));
            match response
                .iter_mut()
                .find(|d| d.name.eq_ignore_ascii_case(&nv.name))
            {
                Some(d) if is_default => d.value = nv.value.clone(),
                _ => response.push(nv.clone()),
            }
        }
        let side = |set: Vec<NameValue>| {
            (!set.is_empty()).then(|| SideConfig {
                set,
                ..SideConfig::default()
            })
        };
        TransformationConfig {
            request: side(self.request_headers.clone()),
            response: side(response),
        }
    }
}

/// Parses a `my-smart-header` config and compiles it.
pub fn smart_header_transformation(
    bytes: &[u8],
    options: &Options,
) -> Result<Transformation, Error> {
    Transformation::compile(
        &SmartHeaderConfig::from_json(bytes)?.to_transformation_config(),
        options,
    )
}
