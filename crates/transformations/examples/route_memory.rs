//! Memory a compiled transformation keeps, without Envoy: compiles the routes benchmark's policy
//! (`bench/bench.py routes`, the one of issue 24: three real templates, two request headers and
//! one response header) `N` times, as `N` per-route configs would be, and prints this process's
//! RSS growth per config.
//!
//! `cargo run --release -p transformations --example route_memory -- 10000 [shared|distinct|today]`
//! - `shared` (the default): every config has the same bytes and goes through the interning
//!   table as the module's configs do, so they share one compiled transformation;
//! - `distinct`: the route number is part of one template, so every config compiles its own
//!   (the other two templates are still shared between configs): the worst case;
//! - `today`: the previous routes policy (values that lower to header operators), distinct.
use transformations::Transformation;
use transformations::intern::{Interned, Interner};

fn rss_kib() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// The issue's policy; with a route number, the number is inside the `if` template.
fn policy(route: Option<usize>) -> String {
    let mark = route.map(|r| format!("-{r}")).unwrap_or_default();
    format!(
        r#"{{"request": {{"set": [{{"name": "x-route", "value": "r{{{{ request_header(\"x-a\") }}}}"}}, {{"name": "x-b", "value": "{{% if request_header(\"x-c\") == \"1\" %}}one{mark}{{% else %}}other{{% endif %}}"}}]}}, "response": {{"set": [{{"name": "x-resp", "value": "{{{{ header(\":status\") }}}}-{{{{ substring(request_header(\":path\"), 0, 5) }}}}"}}]}}}}"#
    )
}

fn today(route: usize) -> String {
    format!(
        r#"{{"request":{{"set":[{{"name":"x-route-path","value":"{{{{ request_header(\":path\") }}}}"}},{{"name":"x-route-method","value":"{{{{ request_header(\":method\") | lower }}}}"}}]}},"response":{{"set":[{{"name":"x-route","value":"routes-{route}"}}]}}}}"#
    )
}

static TABLE: Interner<Transformation> = Interner::new();

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let mode = args.next().unwrap_or_else(|| "shared".into());
    let config = |i: usize| match mode.as_str() {
        "shared" => policy(None),
        "distinct" => policy(Some(i)),
        "today" => today(i),
        other => panic!("unknown mode {other}"),
    };
    // Warm up: the shared environment and the allocator's first arenas.
    let warm = Transformation::from_json(config(usize::MAX).as_bytes()).expect("compiles");
    let before = rss_kib();
    let kept: Vec<Interned<Transformation>> = (0..n)
        .map(|i| {
            let bytes = config(i);
            TABLE
                .get_or_try_insert_with(bytes.as_bytes(), || {
                    Transformation::from_json(bytes.as_bytes())
                })
                .expect("policy compiles")
        })
        .collect();
    let after = rss_kib();
    println!(
        "{n} configs ({mode}): RSS {before} KiB -> {after} KiB, {:.2} KiB per config",
        (after - before) as f64 / n as f64
    );
    drop(kept);
    drop(warm);
}
