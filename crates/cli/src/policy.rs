//! Finding what the module would load in Kubernetes manifests and Envoy configs: TrafficPolicy
//! `spec.transformation` (filter `rustformation`, per route) and `spec.acl` (`http-acl`), and
//! every `DynamicModuleFilter`/`DynamicModuleFilterPerRoute` of module `rust_module`.

use serde_json::Value;

use crate::yaml::{Document, Position};

pub const DYNAMIC_MODULE_FILTER: &str =
    "envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter";
pub const DYNAMIC_MODULE_PER_ROUTE: &str =
    "envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilterPerRoute";
const MODULE_NAME: &str = "rust_module";

/// One config the module would load.
#[derive(Debug, Clone)]
pub struct Found {
    /// `TrafficPolicy/default/name`, or `DynamicModuleFilterPerRoute/rustformation` for Envoy.
    pub label: String,
    /// `metadata.name` of a TrafficPolicy.
    pub name: Option<String>,
    pub filter_name: String,
    pub per_route: bool,
    /// The config bytes the module receives.
    pub config: Vec<u8>,
    /// Path of the config in the document: `spec.transformation`, or the `filter_config` path.
    pub path: String,
    /// True when the config is the YAML subtree at `path` (so a field path inside it maps to a
    /// line); false when it is a JSON string (only the string's own line is known).
    pub structured: bool,
    pub doc: usize,
}

impl Found {
    /// The line of `field` (a path inside the config, e.g. `response.set[1].value`), plus
    /// `template_line` (1-based) inside the value when known.
    pub fn line(
        &self,
        docs: &[Document],
        field: Option<&str>,
        template_line: Option<usize>,
    ) -> Option<usize> {
        let doc = docs.get(self.doc)?;
        if self.structured
            && let Some(field) = field
        {
            // The deepest known node on the path (`request.set[0]` for `request.set[0].value`
            // when the value is missing).
            let mut path = format!("{}.{}", self.path, field);
            loop {
                if let Some(&Position { line, .. }) = doc.positions.get(&path) {
                    // Exact for block scalars and one-line values; a quoted value folded over
                    // several lines is counted from its first line.
                    return Some(match template_line {
                        Some(t) if path.ends_with(field) => line + t.saturating_sub(1),
                        _ => line,
                    });
                }
                match path.rfind(['.', '[']) {
                    Some(i) if i > self.path.len() => path.truncate(i),
                    _ => break,
                }
            }
        }
        doc.positions
            .get(&self.path)
            .map(|p| p.line)
            .or(Some(doc.line))
    }

    /// The full path of a field inside the config, for messages.
    pub fn field_path(&self, field: Option<&str>) -> String {
        match (field, self.structured) {
            (Some(f), true) => format!("{}.{f}", self.path),
            (Some(f), false) => format!("{} ({f})", self.path),
            (None, _) => self.path.clone(),
        }
    }
}

/// A Kubernetes object (`apiVersion` and `kind`), a list of them, or an Envoy config
/// (bootstrap, xDS resources, or anything naming a `@type`). An empty document counts too.
pub fn is_known_document(value: &Value) -> bool {
    fn has_type(v: &Value) -> bool {
        match v {
            Value::Object(m) => m.contains_key("@type") || m.values().any(has_type),
            Value::Array(a) => a.iter().any(has_type),
            _ => false,
        }
    }
    match value {
        Value::Null => true,
        Value::Object(m) => {
            (m.contains_key("apiVersion") && m.contains_key("kind"))
                || m.contains_key("static_resources")
                || m.contains_key("resources")
                || has_type(value)
        }
        _ => false,
    }
}

/// Everything the module would load in these documents, in document order.
pub fn find(docs: &[Document]) -> Vec<Found> {
    let mut out = Vec::new();
    for (i, doc) in docs.iter().enumerate() {
        visit_object(&doc.value, "", i, &mut out);
    }
    out
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn visit_object(value: &Value, path: &str, doc: usize, out: &mut Vec<Found>) {
    let kind = value.get("kind").and_then(Value::as_str);
    let api = value
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    if kind == Some("List")
        && let Some(items) = value.get("items").and_then(Value::as_array)
    {
        for (n, item) in items.iter().enumerate() {
            visit_object(item, &join(path, &format!("items[{n}]")), doc, out);
        }
        return;
    }
    if kind == Some("TrafficPolicy") && api.starts_with("gateway.kgateway.dev/") {
        traffic_policy(value, path, doc, out);
        return;
    }
    walk_envoy(value, path, doc, out);
}

fn traffic_policy(value: &Value, path: &str, doc: usize, out: &mut Vec<Found>) {
    let meta = value.get("metadata");
    let name = meta
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    // The namespace kubectl would use when the manifest names none.
    let namespace = meta
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    let label = format!(
        "TrafficPolicy/{namespace}/{}",
        name.as_deref().unwrap_or("<unnamed>")
    );
    let spec = value.get("spec");
    let mut any = false;
    for (field, filter) in [
        ("transformation", rustformations::RUSTFORMATION),
        ("acl", rustformations::HTTP_ACL),
    ] {
        if let Some(config) = spec.and_then(|s| s.get(field)).filter(|v| !v.is_null()) {
            any = true;
            out.push(Found {
                label: label.clone(),
                name: name.clone(),
                filter_name: filter.to_owned(),
                per_route: true,
                // kgateway serializes the field as JSON: the same bytes, modulo formatting.
                config: config.to_string().into_bytes(),
                path: join(path, &format!("spec.{field}")),
                structured: true,
                doc,
            });
        }
    }
    if !any {
        out.push(Found {
            label,
            name,
            filter_name: String::new(),
            per_route: true,
            config: Vec::new(),
            path: join(path, "spec"),
            structured: true,
            doc,
        });
    }
}

/// Walks an Envoy config (or anything else) for dynamic-module filter configs of our module.
fn walk_envoy(value: &Value, path: &str, doc: usize, out: &mut Vec<Found>) {
    match value {
        Value::Object(map) => {
            if let Some(found) = dynamic_module_config(value, path, doc) {
                out.push(found);
                return;
            }
            for (k, v) in map {
                walk_envoy(v, &join(path, k), doc, out);
            }
        }
        Value::Array(items) => {
            for (n, v) in items.iter().enumerate() {
                walk_envoy(v, &format!("{path}[{n}]"), doc, out);
            }
        }
        _ => {}
    }
}

fn dynamic_module_config(value: &Value, path: &str, doc: usize) -> Option<Found> {
    let ty = value.get("@type")?.as_str()?;
    let ty = ty.rsplit('/').next()?;
    let per_route = match ty {
        DYNAMIC_MODULE_FILTER => false,
        DYNAMIC_MODULE_PER_ROUTE => true,
        _ => return None,
    };
    let module = value
        .get("dynamic_module_config")
        .and_then(|c| c.get("name"))
        .and_then(Value::as_str);
    if module != Some(MODULE_NAME) {
        return None;
    }
    let name_field = if per_route {
        "per_route_config_name"
    } else {
        "filter_name"
    };
    let filter_name = value
        .get(name_field)
        .or_else(|| value.get("filter_name"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let (config, config_path) = match value.get("filter_config") {
        None => (Vec::new(), join(path, "filter_config")),
        Some(Value::String(s)) => (s.clone().into_bytes(), join(path, "filter_config")),
        Some(any) => {
            let inner = any.get("value");
            let any_type = any.get("@type").and_then(Value::as_str).unwrap_or("");
            let bytes = match inner {
                Some(Value::String(s)) if any_type.ends_with("BytesValue") => {
                    use base64::Engine as _;
                    base64::engine::general_purpose::STANDARD
                        .decode(s)
                        .unwrap_or_else(|_| s.clone().into_bytes())
                }
                Some(Value::String(s)) => s.clone().into_bytes(),
                // google.protobuf.Struct: the module receives it as JSON.
                Some(other) => other.to_string().into_bytes(),
                None => Vec::new(),
            };
            (bytes, join(path, "filter_config.value"))
        }
    };
    Some(Found {
        label: format!(
            "{}/{}",
            if per_route {
                "DynamicModuleFilterPerRoute"
            } else {
                "DynamicModuleFilter"
            },
            if filter_name.is_empty() {
                "<no filter name>"
            } else {
                &filter_name
            }
        ),
        name: None,
        filter_name,
        per_route,
        config,
        path: config_path,
        structured: false,
        doc,
    })
}
