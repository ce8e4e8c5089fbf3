//! `rustformations render`: one request (and its upstream response) through a policy, by the
//! module's own filter: its config callbacks build the filter, and the fake Envoy
//! (`envoy_module::testing`) runs its hooks on the request and the response as Envoy would.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use std::sync::Arc;

use envoy_module::Attribute;
use envoy_module::testing::{Delivery, FakeEnvoy, FakeFilterConfigEnvoy, HeaderMap, HttpMessage};
use rustformations::outside_envoy::{self, OutsideEnvoyOptions};
use rustformations::{LoadedConfig, load_config_with};
use serde_json::{Value, json};
use transformations::marker::Marker;
use transformations::memory::MemoryMessage;
use transformations::{
    KgatewayRelease, MetadataSource, Options, SideAction, Transformation, Warning,
};

use crate::http;
use crate::input;
use crate::policy::{self, Found};
use crate::yaml;

/// A compiled policy and what it is called.
pub struct Policy {
    pub label: String,
    pub filter_name: String,
    pub transformation: Transformation,
    /// A route's config (a TrafficPolicy, a `DynamicModuleFilterPerRoute`, raw transformation
    /// JSON), as opposed to the listener's (`DynamicModuleFilter`).
    pub per_route: bool,
    /// The config bytes the module receives.
    pub config: Vec<u8>,
}

/// Loads a policy: a TrafficPolicy (or Envoy config) file, `--name` picking one when it holds
/// several, or a file of raw transformation JSON. Compiled by the module's own loader.
pub fn load_policy(path: &str, name: Option<&str>) -> Result<Policy, String> {
    load_policy_with(path, name, &Options::default())
}

/// Compile options where `env(NAME)` reads `env` first, then this process's environment.
pub fn compile_options(env: Vec<(String, String)>, release: KgatewayRelease) -> Options {
    Options {
        env: Arc::new(move |n: &str| {
            env.iter()
                .rev()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.clone())
                .or_else(|| std::env::var(n).ok())
        }),
        release,
        ..Options::default()
    }
}

/// [`load_policy`] with compile options.
pub fn load_policy_with(
    path: &str,
    name: Option<&str>,
    options: &Options,
) -> Result<Policy, String> {
    let source = input::read(path)?;
    let text = source.text()?;
    let docs = yaml::parse(text).map_err(|e| format!("{}: {e}", source.name))?;
    let found: Vec<Found> = policy::find(&docs)
        .into_iter()
        .filter(|f| {
            matches!(
                f.filter_name.as_str(),
                rustformations::RUSTFORMATION
                    | rustformations::SIMPLE_MUTATIONS
                    | rustformations::SMART_HEADER
            )
        })
        .collect();
    let raw = found.is_empty()
        && docs.len() == 1
        && docs[0].value.is_object()
        && docs[0].value.get("kind").is_none();
    let (label, filter_name, per_route, config) = if raw {
        // Raw transformation JSON (or YAML of the same shape), as the filter receives it.
        let bytes = if serde_json::from_str::<Value>(text).is_ok() {
            text.as_bytes().to_vec()
        } else {
            docs[0].value.to_string().into_bytes()
        };
        // As kgateway sends a policy: per route.
        (
            source.name.clone(),
            rustformations::RUSTFORMATION.to_owned(),
            true,
            bytes,
        )
    } else {
        let candidates: Vec<&Found> = found
            .iter()
            .filter(|f| name.is_none() || f.name.as_deref() == name)
            .collect();
        match candidates[..] {
            [one] => (
                one.label.clone(),
                one.filter_name.clone(),
                one.per_route,
                one.config.clone(),
            ),
            [] if name.is_some() => {
                return Err(format!(
                    "{}: no TrafficPolicy named {:?} with a transformation",
                    source.name,
                    name.unwrap_or_default()
                ));
            }
            [] => {
                return Err(format!(
                    "{}: no transformation found (expected a TrafficPolicy with spec.transformation, \
                     an Envoy config of rust_module, or the transformation JSON itself)",
                    source.name
                ));
            }
            _ => {
                let names: Vec<&str> = candidates.iter().map(|f| f.label.as_str()).collect();
                return Err(format!(
                    "{}: {} transformations found ({}); pick one with --name",
                    source.name,
                    names.len(),
                    names.join(", ")
                ));
            }
        }
    };
    match load_config_with(&filter_name, &config, per_route, options) {
        Ok(LoadedConfig::Transformation(t)) => Ok(Policy {
            label,
            filter_name,
            transformation: *t,
            per_route,
            config,
        }),
        Ok(_) => Err(format!("{label}: not a transformation")),
        Err(e) => Err(format!("{label}: the module refuses this config: {e}")),
    }
}

/// Sets what the module takes from Envoy's process to the tool's choices, before any config is
/// loaded: compile options, the marker header, the start time of the stream. Keeps the filter's
/// warnings and replies for the output, and its log lines out of it.
pub fn set_outside_envoy_options(
    compile: Options,
    marker: Option<Marker>,
    start_time: SystemTime,
) -> Result<(), String> {
    envoy_module::set_log_level_outside_envoy(None);
    outside_envoy::set_outside_envoy_options(OutsideEnvoyOptions {
        compile,
        marker,
        start_time: Some(start_time),
        keep_reports: true,
    })
}

/// Stream facts Envoy would supply.
pub struct Stream {
    /// What `metadata()` reads: (source, namespace, key, value).
    pub metadata: Vec<(MetadataSource, String, String, String)>,
    pub protocol: String,
    pub remote_address: SocketAddr,
}

/// Parses `--metadata [SOURCE/]NAMESPACE:KEY=VALUE` (the namespace may hold dots, not `:`).
pub fn parse_metadata(s: &str) -> Result<(MetadataSource, String, String, String), String> {
    let bad = || format!("--metadata wants [SOURCE/]NAMESPACE:KEY=VALUE, got {s:?}");
    let (target, value) = s.split_once('=').ok_or_else(bad)?;
    let (source, target) = match target.split_once('/') {
        Some((source, rest)) if !source.contains(':') => (
            MetadataSource::from_name(source).ok_or_else(|| {
                format!("--metadata: unknown source {source:?} (dynamic, route, cluster or host)")
            })?,
            rest,
        ),
        _ => (MetadataSource::Dynamic, target),
    };
    let (namespace, key) = target.split_once(':').ok_or_else(bad)?;
    if namespace.is_empty() || key.is_empty() {
        return Err(bad());
    }
    Ok((
        source,
        namespace.to_owned(),
        key.to_owned(),
        value.to_owned(),
    ))
}

/// Parses `2026-11-26T13:46:26.123Z` (or without milliseconds).
pub fn parse_time(s: &str) -> Result<SystemTime, String> {
    let bad = || format!("not a UTC time like 2026-11-26T13:46:26.123Z: {s:?}");
    let s2 = s.strip_suffix('Z').ok_or_else(bad)?;
    let (date, time) = s2.split_once('T').ok_or_else(bad)?;
    let d: Vec<i64> = date
        .split('-')
        .map(|p| p.parse().map_err(|_| bad()))
        .collect::<Result<_, _>>()?;
    let (hms, millis) = match time.split_once('.') {
        Some((hms, ms)) if ms.len() == 3 => (hms, ms.parse::<u64>().map_err(|_| bad())?),
        Some(_) => return Err(bad()),
        None => (time, 0),
    };
    let t: Vec<i64> = hms
        .split(':')
        .map(|p| p.parse().map_err(|_| bad()))
        .collect::<Result<_, _>>()?;
    let (&[y, m, day], &[hh, mm, ss]) = (&d[..], &t[..]) else {
        return Err(bad());
    };
    if !(1..=12).contains(&m)
        || !(1..=31).contains(&day)
        || hh > 23
        || mm > 59
        || ss > 60
        || y < 1970
    {
        return Err(bad());
    }
    // Days from civil (Howard Hinnant).
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hh * 3600 + mm * 60 + ss;
    Ok(UNIX_EPOCH + Duration::from_secs(secs as u64) + Duration::from_millis(millis))
}

/// A local reply of the filter, and why it was sent.
pub struct Reply {
    pub reply: envoy_module::testing::LocalReply,
    /// What went wrong, as the filter logs it.
    pub reason: String,
}

/// What happened to one exchange.
pub struct Rendered {
    pub request_before: MemoryMessage,
    /// The request as it goes upstream (as far as the filter got, when it answered instead).
    pub request: MemoryMessage,
    pub request_action: SideAction,
    pub request_warnings: Vec<Warning>,
    /// The filter answered the request itself: nothing went upstream.
    pub answered: bool,
    pub response_before: Option<MemoryMessage>,
    pub response: Option<MemoryMessage>,
    pub response_action: Option<SideAction>,
    pub response_warnings: Vec<Warning>,
    /// The reply the client gets instead of a response, if any.
    pub reply: Option<Reply>,
    pub metadata: Vec<(String, String, String)>,
}

fn to_http(m: &MemoryMessage) -> HttpMessage {
    HttpMessage {
        headers: HeaderMap::from_pairs(m.headers.iter().map(|(n, v)| (n, v))),
        body: m.body.clone(),
        trailers: HeaderMap::new(),
    }
}

fn to_memory(headers: &HeaderMap, body: &[u8]) -> MemoryMessage {
    MemoryMessage {
        headers: headers
            .iter()
            .map(|(n, v)| (n.to_owned(), v.to_vec()))
            .collect(),
        body: body.to_vec(),
    }
}

/// Runs the exchange through the module's filter: the config callbacks build it (for a route's
/// policy, the listener's `{}` config as kgateway sends it plus the route's config), and the fake
/// Envoy drives its hooks over the request, then over the upstream's response.
pub fn run(
    policy: &Policy,
    request: MemoryMessage,
    response: MemoryMessage,
    stream: &Stream,
) -> Result<Rendered, String> {
    let refused = |e: String| format!("{}: the module refuses this config: {e}", policy.label);
    let listener_config: &[u8] = if policy.per_route {
        b"{}"
    } else {
        &policy.config
    };
    let config = rustformations::new_filter_config(
        &mut FakeFilterConfigEnvoy::new(),
        &policy.filter_name,
        listener_config,
    )
    .map_err(refused)?;
    let mut envoy = FakeEnvoy::new();
    if policy.per_route {
        envoy.per_route = Some(
            rustformations::new_per_route_config(&policy.filter_name, &policy.config)
                .map_err(refused)?,
        );
    }
    envoy.string_attributes.insert(
        Attribute::SourceAddress,
        stream.remote_address.to_string().into_bytes(),
    );
    envoy.string_attributes.insert(
        Attribute::RequestProtocol,
        stream.protocol.clone().into_bytes(),
    );
    for (source, namespace, key, value) in &stream.metadata {
        let source = match source {
            MetadataSource::Dynamic => envoy_module::MetadataSource::Dynamic,
            MetadataSource::Route => envoy_module::MetadataSource::Route,
            MetadataSource::Cluster => envoy_module::MetadataSource::Cluster,
            MetadataSource::Host => envoy_module::MetadataSource::Host,
        };
        let values = match source {
            envoy_module::MetadataSource::Dynamic => &mut envoy.dynamic_metadata,
            other => envoy.metadata.entry(other).or_default(),
        };
        values.insert((namespace.clone(), key.clone()), value.clone());
    }

    let t = &policy.transformation;
    let headers_only_stream = t.headers_only_stream(&request);
    let mut filter = config.new_filter();
    outside_envoy::take_reports();
    let delivery = envoy.send_request(&mut *filter, to_http(&request))?;
    let request_reports = outside_envoy::take_reports();
    let mut rendered = Rendered {
        request: to_memory(&envoy.request_headers, &envoy.request_body),
        request_before: request,
        request_action: t.request().action(headers_only_stream),
        request_warnings: request_reports.warnings,
        answered: delivery == Delivery::LocalReply,
        response_before: None,
        response: None,
        response_action: None,
        response_warnings: Vec::new(),
        reply: None,
        metadata: Vec::new(),
    };
    let mut reply_reason = request_reports.reply_reason;
    if delivery == Delivery::Forwarded {
        envoy.send_response(&mut *filter, to_http(&response))?;
        let response_reports = outside_envoy::take_reports();
        rendered.response_action = Some(t.response().action(headers_only_stream));
        rendered.response_warnings = response_reports.warnings;
        reply_reason = reply_reason.or(response_reports.reply_reason);
        rendered.response = Some(to_memory(&envoy.response_headers, &envoy.response_body));
        rendered.response_before = Some(response);
    }
    rendered.reply = envoy.local_reply.take().map(|reply| Reply {
        reply,
        reason: reply_reason.unwrap_or_default(),
    });
    rendered.metadata = envoy.dynamic_metadata_writes;
    Ok(rendered)
}

/// The client's view of a local reply, as Envoy sends it.
fn reply_message(reply: &Reply) -> MemoryMessage {
    let client = reply.reply.to_client();
    to_memory(&client.headers, &client.body)
}

fn header(m: &MemoryMessage, name: &str) -> String {
    m.header(name).unwrap_or_default()
}

pub fn action_name(a: SideAction) -> &'static str {
    match a {
        SideAction::PassThrough => "pass-through",
        SideAction::HeadersOnly => "headers-only",
        SideAction::Buffered => "buffered",
    }
}

fn status_line(m: &MemoryMessage) -> String {
    let status = header(m, ":status");
    let reason = status.parse::<u16>().map(http::reason).unwrap_or("");
    format!("HTTP/1.1 {status} {reason}").trim_end().to_owned()
}

pub fn print_text(policy: &Policy, r: &Rendered) -> String {
    let mut out = String::new();
    out.push_str(&format!("# policy: {}\n", policy.label));
    out.push_str(&format!(
        "# request side: {}\n",
        action_name(r.request_action)
    ));
    for w in &r.request_warnings {
        out.push_str(&format!("# warning: {w}\n"));
    }
    out.push('\n');
    if r.answered {
        out.push_str("== upstream request: none, the filter answered the request ==\n\n");
    } else {
        out.push_str("== upstream request ==\n");
        let start = format!(
            "{} {} HTTP/1.1\n{} host: {}",
            header(&r.request, ":method"),
            header(&r.request, ":path"),
            if header(&r.request, ":authority") == header(&r.request_before, ":authority") {
                ' '
            } else {
                '~'
            },
            header(&r.request, ":authority"),
        );
        http::print_message(&start, &r.request_before, &r.request, &mut out);
        out.push('\n');
    }
    if let Some(a) = r.response_action {
        out.push_str(&format!("# response side: {}\n", action_name(a)));
    }
    for w in &r.response_warnings {
        out.push_str(&format!("# warning: {w}\n"));
    }
    match (&r.reply, &r.response_before, &r.response) {
        (Some(reply), _, _) => {
            out.push_str("== client response: local reply of the filter ==\n");
            let m = reply_message(reply);
            http::print_message(&status_line(&m), &MemoryMessage::default(), &m, &mut out);
            out.push_str(&format!(
                "# details: {}\n# reason: {}\n",
                reply.reply.details, reply.reason
            ));
        }
        (None, Some(before), Some(after)) => {
            out.push_str("== client response ==\n");
            http::print_message(&status_line(after), before, after, &mut out);
        }
        _ => {}
    }
    for (ns, key, value) in &r.metadata {
        out.push_str(&format!("# dynamic metadata {ns}/{key} = {value}\n"));
    }
    out
}

fn warnings_json(w: &[Warning]) -> Vec<Value> {
    w.iter()
        .map(|w| json!({"field": w.field, "message": w.message}))
        .collect()
}

pub fn to_json(policy: &Policy, r: &Rendered) -> Value {
    let upstream = if r.answered {
        Value::Null
    } else {
        let mut m = http::message_json(&r.request_before, &r.request);
        m["method"] = header(&r.request, ":method").into();
        m["path"] = header(&r.request, ":path").into();
        m["authority"] = header(&r.request, ":authority").into();
        m
    };
    let client = match (&r.reply, &r.response_before, &r.response) {
        (Some(reply), _, _) => {
            let m = reply_message(reply);
            let mut v = http::message_json(&MemoryMessage::default(), &m);
            v["status"] = reply.reply.status.into();
            v["local_reply"] = true.into();
            v["details"] = reply.reply.details.clone().into();
            v["reason"] = reply.reason.clone().into();
            v
        }
        (None, Some(before), Some(after)) => {
            let mut v = http::message_json(before, after);
            v["status"] = header(after, ":status")
                .parse::<u64>()
                .map(Value::from)
                .unwrap_or(Value::Null);
            v["local_reply"] = false.into();
            v
        }
        _ => Value::Null,
    };
    json!({
        "policy": policy.label,
        "request_side": {"action": action_name(r.request_action), "warnings": warnings_json(&r.request_warnings)},
        "upstream_request": upstream,
        "response_side": r.response_action.map(|a| json!({"action": action_name(a), "warnings": warnings_json(&r.response_warnings)})),
        "client_response": client,
        "dynamic_metadata": r.metadata.iter().map(|(n, k, v)| json!({"namespace": n, "key": k, "value": v})).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        let t = parse_time("2026-11-26T13:46:26.123Z").unwrap();
        assert_eq!(
            transformations::operators::format_start_time(t),
            "2026-11-26T13:46:26.123Z"
        );
        let t = parse_time("2000-02-29T00:00:00Z").unwrap();
        assert_eq!(
            transformations::operators::format_start_time(t),
            "2000-02-29T00:00:00.000Z"
        );
        for bad in [
            "2026-13-01T00:00:00Z",
            "yesterday",
            "2026-11-26T13:46:26",
            "2026-11-26T13:46:26.1Z",
        ] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
    }
}
