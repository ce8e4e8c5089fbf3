//! `rustformations explain`: the plan the module compiled for one policy, read from the
//! compiled transformation's public accessors (`transformations::plan`).

use serde_json::{Value, json};
use transformations::operators::{Operator, OperatorKind};
use transformations::plan::Reads;
use transformations::{HeaderNeeds, Side, SideAction, Target, ValueKind};

use crate::render::{Policy, action_name};

fn operator(op: &Operator) -> String {
    let header = |kind: &str, name: &str, alt: &Option<String>| match alt {
        Some(a) => format!("%{kind}({name}?{a})%"),
        None => format!("%{kind}({name})%"),
    };
    let base = match &op.kind {
        OperatorKind::Req { name, alt } => header("REQ", name, alt),
        OperatorKind::Resp { name, alt } => header("RESP", name, alt),
        OperatorKind::Protocol => "%PROTOCOL%".into(),
        OperatorKind::StartTime => "%START_TIME%".into(),
        OperatorKind::DownstreamRemoteAddress => "%DOWNSTREAM_REMOTE_ADDRESS%".into(),
        OperatorKind::DownstreamRemoteAddressWithoutPort => {
            "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%".into()
        }
    };
    match op.max_len {
        Some(n) => format!("{}:{n}%", base.trim_end_matches('%')),
        None => base,
    }
}

fn needs(n: &HeaderNeeds) -> Value {
    if n.all() {
        "all".into()
    } else {
        n.names().collect::<Vec<_>>().into()
    }
}

fn needs_text(n: &HeaderNeeds) -> String {
    if n.all() {
        "every header (a name computed at run time)".into()
    } else {
        n.names().collect::<Vec<_>>().join(", ")
    }
}

fn why(side: &Side, action: SideAction) -> String {
    match action {
        SideAction::PassThrough => "nothing to do: passes through untouched, unbuffered".into(),
        SideAction::HeadersOnly => {
            if side.reads().body || side.has_body_value() {
                "parseAs: None: header operations only, body() and context() render empty".into()
            } else {
                "no value reads or replaces the body: runs in the headers callback, the body streams".into()
            }
        }
        SideAction::Buffered => {
            let mut reasons = Vec::new();
            if side.has_body_value() {
                reasons.push("a body value replaces the body");
            }
            if side.parses_json() {
                reasons.push("parseAs: AsJson parses the body");
            }
            if side.reads().body {
                reasons.push("a value calls body() or context()");
            }
            format!(
                "buffered until end of stream because {} (never for a WebSocket upgrade or CONNECT)",
                reasons.join(" and ")
            )
        }
    }
}

fn target(t: &Target<'_>) -> String {
    match t {
        Target::Body => "body".into(),
        Target::Set(n) => format!("set {n}"),
        Target::Add(n) => format!("add {n}"),
        Target::Metadata { namespace, key } => format!("dynamic metadata {namespace}/{key}"),
    }
}

fn kind_name(k: ValueKind) -> &'static str {
    match k {
        ValueKind::Empty => "empty",
        ValueKind::Literal => "literal",
        ValueKind::Operators => "operators",
        ValueKind::Template => "template",
    }
}

fn reads_json(r: &Reads<'_>) -> Value {
    json!({
        "header()": needs(r.header_fn),
        "request_header()": needs(r.request_header_fn),
        "%REQ()%": needs(r.req_operator),
        "%RESP()%": needs(r.resp_operator),
        "own_headers_copied": needs(r.own_headers),
        "body": r.body,
        "whole_json": r.whole_json,
        "protocol": r.protocol,
        "start_time": r.start_time,
        "remote_address": r.remote_address,
    })
}

fn side_json(name: &str, side: &Side) -> Value {
    let action = side.action(false);
    let values: Vec<Value> = side
        .values()
        .iter()
        .map(|v| {
            json!({
                "field": v.field,
                "target": target(&v.target),
                "kind": kind_name(v.kind),
                "literal": v.literal,
                "operators": v.operators.iter().map(|o| operator(o)).collect::<Vec<_>>(),
                "variables": v.variables,
                "json_variables": v.json_variables,
            })
        })
        .collect();
    json!({
        "side": name,
        "action": action_name(action),
        "why": why(side, action),
        "parses_json": side.parses_json(),
        "values": values,
        "removes": side.removes(),
        "reads": reads_json(&side.reads()),
    })
}

pub fn to_json(policy: &Policy) -> Value {
    let t = &policy.transformation;
    json!({
        "policy": policy.label,
        "filter": policy.filter_name,
        "request": side_json("request", t.request()),
        "response": side_json("response", t.response()),
        "response_reads_request_headers": needs(t.response_request_headers()),
        "load_warnings": t.warnings(),
    })
}

fn side_text(name: &str, side: &Side, out: &mut String) {
    let action = side.action(false);
    out.push_str(&format!(
        "{name} side: {} ({})\n",
        action_name(action),
        why(side, action)
    ));
    let mut templates = 0;
    let mut cheap = 0;
    for v in side.values() {
        let what = match v.kind {
            ValueKind::Empty => "empty (set removes the header; add and metadata skip)".to_owned(),
            ValueKind::Literal => format!(
                "literal {:?}, never rendered",
                v.literal.unwrap_or_default()
            ),
            ValueKind::Operators => format!(
                "operators {} joined with text, no template engine",
                v.operators
                    .iter()
                    .map(|o| operator(o))
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
            ValueKind::Template => {
                let mut s = format!("template (MiniJinja), reads {}", {
                    let vars: Vec<&str> = v.variables.iter().map(String::as_str).collect();
                    if vars.is_empty() {
                        "nothing".to_owned()
                    } else {
                        vars.join(", ")
                    }
                });
                if !v.json_variables.is_empty() {
                    s.push_str(&format!(
                        "; {} only from a JSON body",
                        v.json_variables.join(", ")
                    ));
                }
                s
            }
        };
        match v.kind {
            ValueKind::Template => templates += 1,
            ValueKind::Operators => cheap += 1,
            _ => {}
        }
        out.push_str(&format!("  {} -> {}: {what}\n", v.field, target(&v.target)));
    }
    for r in side.removes() {
        out.push_str(&format!("  remove {r}\n"));
    }
    let reads = side.reads();
    if !reads.own_headers.is_empty() {
        out.push_str(&format!(
            "  copies these {name} headers before rendering: {}\n",
            needs_text(reads.own_headers)
        ));
    }
    if action != SideAction::PassThrough {
        out.push_str(&format!(
            "  per {name}: {templates} template render(s), {cheap} operator value(s){}{}\n",
            if action == SideAction::Buffered {
                ", the whole body buffered"
            } else {
                ""
            },
            if side.parses_json() {
                if reads.whole_json {
                    ", the whole JSON body converted"
                } else {
                    ", only the named JSON keys converted"
                }
            } else {
                ""
            }
        ));
    }
}

pub fn print_text(policy: &Policy) -> String {
    let t = &policy.transformation;
    let mut out = format!("policy: {} (filter {})\n", policy.label, policy.filter_name);
    side_text("request", t.request(), &mut out);
    side_text("response", t.response(), &mut out);
    let snapshot = t.response_request_headers();
    if !snapshot.is_empty() {
        out.push_str(&format!(
            "request headers kept for the response side (as the client sent them): {}\n",
            needs_text(snapshot)
        ));
    }
    for w in t.warnings() {
        out.push_str(&format!("load warning: {w}\n"));
    }
    out
}
