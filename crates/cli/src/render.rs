//! `rustformations render`: one request (and its upstream response) through a policy, with the
//! filter's own steps (`transformations::exchange`).

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use std::sync::Arc;

use rustformations::{LoadedConfig, load_config_with};
use serde_json::{Value, json};
use transformations::exchange::{self, LocalReply, RequestOutcome};
use transformations::marker::Marker;
use transformations::memory::{MemoryMessage, MemoryStreamInfo};
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
}

/// Loads a policy: a TrafficPolicy (or Envoy config) file, `--name` picking one when it holds
/// several, or a file of raw transformation JSON. Compiled by the module's own loader.
pub fn load_policy(path: &str, name: Option<&str>) -> Result<Policy, String> {
    load_policy_with_env(path, name, Vec::new(), KgatewayRelease::default())
}

/// [`load_policy`] where `env(NAME)` reads `env` first, then this process's environment.
pub fn load_policy_with_env(
    path: &str,
    name: Option<&str>,
    env: Vec<(String, String)>,
    release: KgatewayRelease,
) -> Result<Policy, String> {
    let options = Options {
        env: Arc::new(move |n: &str| {
            env.iter()
                .rev()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.clone())
                .or_else(|| std::env::var(n).ok())
        }),
        release,
        ..Options::default()
    };
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
    let (label, filter_name, config) = if raw {
        // Raw transformation JSON (or YAML of the same shape), as the filter receives it.
        let bytes = if serde_json::from_str::<Value>(text).is_ok() {
            text.as_bytes().to_vec()
        } else {
            docs[0].value.to_string().into_bytes()
        };
        (
            source.name.clone(),
            rustformations::RUSTFORMATION.to_owned(),
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
    match load_config_with(&filter_name, &config, true, &options) {
        Ok(LoadedConfig::Transformation(t)) => Ok(Policy {
            label,
            filter_name,
            transformation: *t,
        }),
        Ok(_) => Err(format!("{label}: not a transformation")),
        Err(e) => Err(format!("{label}: the module refuses this config: {e}")),
    }
}

/// Stream facts Envoy would supply.
pub struct Stream {
    /// What `metadata()` reads: (source, namespace, key, value).
    pub metadata: Vec<(MetadataSource, String, String, String)>,
    pub protocol: String,
    pub start_time: SystemTime,
    pub remote_address: SocketAddr,
    pub marker: Option<Marker>,
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

/// What happened to one exchange.
pub struct Rendered {
    pub request_before: MemoryMessage,
    pub request: MemoryMessage,
    pub request_outcome: RequestOutcome,
    pub response_before: Option<MemoryMessage>,
    pub response: Option<MemoryMessage>,
    pub response_action: Option<SideAction>,
    pub response_warnings: Vec<Warning>,
    /// The reply the client gets instead of a response, if any.
    pub reply: Option<LocalReply>,
    pub metadata: Vec<(String, String, String)>,
}

pub fn run(
    policy: &Policy,
    request: MemoryMessage,
    response: MemoryMessage,
    stream: &Stream,
) -> Rendered {
    let t = &policy.transformation;
    let marker = match policy.filter_name.as_str() {
        rustformations::SMART_HEADER => None,
        _ => stream.marker.as_ref(),
    };
    let mut info = MemoryStreamInfo {
        protocol: Some(stream.protocol.clone()),
        start_time: Some(stream.start_time),
        downstream_remote_address: Some(stream.remote_address),
        metadata: stream
            .metadata
            .iter()
            .map(|(source, ns, key, value)| ((*source, ns.clone(), key.clone()), value.clone()))
            .collect(),
        ..MemoryStreamInfo::default()
    };
    let request_before = request.clone();
    let mut request = request;
    let outcome = exchange::run_request(t, marker, &mut request, &mut info);
    let mut rendered = Rendered {
        request_before,
        request,
        request_outcome: outcome,
        response_before: None,
        response: None,
        response_action: None,
        response_warnings: Vec::new(),
        reply: None,
        metadata: Vec::new(),
    };
    if let Some(reply) = &rendered.request_outcome.reply {
        rendered.reply = Some(reply.clone());
    } else {
        let mut response_after = response.clone();
        let r = exchange::run_response(
            t,
            marker,
            &rendered.request_outcome,
            &mut response_after,
            &mut info,
        );
        rendered.response_action = Some(r.action);
        rendered.response_warnings = r.warnings;
        rendered.reply = r.reply;
        rendered.response_before = Some(response);
        rendered.response = Some(response_after);
    }
    rendered.metadata = info.dynamic_metadata;
    rendered
}

/// The client's view of a local reply: Envoy sends the reply's headers and `content-length`.
fn reply_message(reply: &LocalReply) -> MemoryMessage {
    let mut m = MemoryMessage::default();
    m.headers
        .push((":status".into(), reply.status.to_string().into_bytes()));
    for (n, v) in &reply.headers {
        m.headers.push((n.clone(), v.clone().into_bytes()));
    }
    m.headers.push((
        "content-length".into(),
        reply.body.len().to_string().into_bytes(),
    ));
    m.body = reply.body.clone();
    m
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
    let o = &r.request_outcome;
    out.push_str(&format!("# request side: {}\n", action_name(o.action)));
    for w in &o.warnings {
        out.push_str(&format!("# warning: {w}\n"));
    }
    out.push('\n');
    if o.reply.is_some() {
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
                reply.details, reply.reason
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
    let o = &r.request_outcome;
    let upstream = if o.reply.is_some() {
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
            v["status"] = reply.status.into();
            v["local_reply"] = true.into();
            v["details"] = reply.details.into();
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
        "request_side": {"action": action_name(o.action), "warnings": warnings_json(&o.warnings)},
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
