//! The http-acl config parser on arbitrary bytes, and the longest-prefix matcher against a
//! naive reference on arbitrary rule sets and client addresses.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Rule {
    addr: u32,
    prefix: u8,
    allow: bool,
}

#[derive(Debug, Arbitrary)]
struct Input {
    raw_config: Vec<u8>,
    raw_client: String,
    default_allow: bool,
    rules: Vec<Rule>,
    clients: Vec<u32>,
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    }
}

fuzz_target!(|input: Input| {
    // Any bytes: a policy or an error, never a panic; a policy decides any client string.
    if let Ok(policy) = acl::AclConfig::from_json(&input.raw_config) {
        let decision = policy.decide(Some(&input.raw_client));
        let _ = policy.deny_response(&decision);
    }

    // Structured: valid IPv4 rules, checked against a linear longest-prefix reference.
    let rules: Vec<(u32, u8, bool, String)> = input
        .rules
        .iter()
        .take(64)
        .enumerate()
        .map(|(i, r)| {
            let prefix = r.prefix % 33;
            (r.addr & mask(prefix), prefix, r.allow, format!("r{i}"))
        })
        .collect();
    let config = serde_json::json!({
        "defaultAction": if input.default_allow { "allow" } else { "deny" },
        "rules": rules.iter().map(|(a, p, allow, name)| serde_json::json!({
            "name": name,
            "cidrs": [format!("{}/{}", Ipv4Addr::from(*a), p)],
            "action": if *allow { "allow" } else { "deny" },
        })).collect::<Vec<_>>(),
    });
    let policy = acl::AclConfig::from_json(config.to_string().as_bytes())
        .expect("a config of valid CIDRs loads");
    for &client in input.clients.iter().take(32) {
        // Longest prefix wins; among equal CIDRs the last rule wins.
        let mut best: Option<&(u32, u8, bool, String)> = None;
        for rule in &rules {
            if client & mask(rule.1) == rule.0 && best.is_none_or(|b| rule.1 >= b.1) {
                best = Some(rule);
            }
        }
        let expected = match best {
            Some((_, _, true, _)) => acl::Decision::Allow,
            Some((_, _, false, name)) => acl::Decision::Deny { blocked_by: name },
            None if input.default_allow => acl::Decision::Allow,
            None => acl::Decision::Deny {
                blocked_by: acl::BLOCKED_BY_DEFAULT,
            },
        };
        let ip = IpAddr::V4(Ipv4Addr::from(client));
        assert_eq!(policy.decide_ip(ip), expected, "client {ip}");
        // The same client as Envoy's `source.address` string and as IPv4-mapped IPv6.
        assert_eq!(policy.decide(Some(&format!("{ip}:1234"))), expected);
        let mapped = IpAddr::V6(Ipv4Addr::from(client).to_ipv6_mapped());
        assert_eq!(policy.decide_ip(mapped), expected, "mapped {mapped}");
    }
});
