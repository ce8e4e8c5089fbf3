//! Micro-benchmark of the ACL decision with 1,000 CIDR rules (the Envoy benchmark's scenario 7).

use std::hint::black_box;

use acl::{AclConfig, Decision};
use criterion::{Criterion, criterion_group, criterion_main};

fn config(rules: usize) -> String {
    let cidrs: Vec<String> = (0..rules - 1)
        .map(|i| format!("\"10.{}.{}.0/24\"", i / 256, i % 256))
        .collect();
    format!(
        r#"{{"defaultAction":"deny","rules":[
            {{"name":"blocked","cidrs":[{}],"action":"deny"}},
            {{"name":"loopback","cidrs":["127.0.0.0/8"],"action":"allow"}}]}}"#,
        cidrs.join(",")
    )
}

fn benches(c: &mut Criterion) {
    let policy = AclConfig::from_json(config(1000).as_bytes()).unwrap();
    assert_eq!(policy.decide(Some("127.0.0.1:40000")), Decision::Allow);
    assert!(matches!(
        policy.decide(Some("10.3.200.7:40000")),
        Decision::Deny {
            blocked_by: "blocked"
        }
    ));
    c.bench_function("acl 1,000 rules: allowed client (ip:port)", |b| {
        b.iter(|| black_box(policy.decide(black_box(Some("127.0.0.1:40000")))))
    });
    c.bench_function("acl 1,000 rules: denied client (ip:port)", |b| {
        b.iter(|| black_box(policy.decide(black_box(Some("10.3.200.7:40000")))))
    });
    c.bench_function("acl 1,000 rules: no rule matches (default)", |b| {
        b.iter(|| black_box(policy.decide(black_box(Some("192.0.2.1:40000")))))
    });
}

criterion_group!(group, benches);
criterion_main!(group);
