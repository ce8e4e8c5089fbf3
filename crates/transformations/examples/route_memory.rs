//! Memory a compiled transformation keeps, without Envoy: compiles the routes benchmark's policy
//! (`bench/bench.py routes`: two request headers from templates, one response header) `N` times,
//! as `N` per-route configs would be, and prints this process's RSS growth per config.
//!
//! `cargo run --release -p transformations --example route_memory -- 10000 [distinct]`
//! With `distinct`, every config's templates differ (the route number is part of each), so no
//! compiled template can be shared between configs: the worst case.
use transformations::Transformation;

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

fn policy(route: Option<usize>) -> String {
    let suffix = route.map(|r| format!("-{r}")).unwrap_or_default();
    format!(
        r#"{{"request":{{"set":[{{"name":"x-route-path","value":"{{{{ request_header(\":path\") }}}}{suffix}"}},{{"name":"x-route-method","value":"{{{{ request_header(\":method\") | lower }}}}{suffix}"}}]}},"response":{{"set":[{{"name":"x-route","value":"routes"}}]}}}}"#
    )
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let distinct = args.next().as_deref() == Some("distinct");
    let before = rss_kib();
    let kept: Vec<Transformation> = (0..n)
        .map(|i| {
            Transformation::from_json(policy(distinct.then_some(i)).as_bytes())
                .expect("policy compiles")
        })
        .collect();
    let after = rss_kib();
    println!(
        "{n} configs{}: RSS {before} KiB -> {after} KiB, {:.2} KiB per config",
        if distinct {
            " (distinct templates)"
        } else {
            ""
        },
        (after - before) as f64 / n as f64
    );
    drop(kept);
}
