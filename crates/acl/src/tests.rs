use super::*;
use ipnet::Ipv6Net;
use std::net::Ipv4Addr;

fn policy(json: &str) -> AclPolicy {
    AclConfig::from_json(json.as_bytes()).unwrap_or_else(|e| panic!("{json}: {e}"))
}

fn err(json: &str) -> String {
    match AclConfig::from_json(json.as_bytes()) {
        Ok(_) => panic!("accepted: {json}"),
        Err(e) => e.to_string(),
    }
}

fn deny(by: &str) -> Decision<'_> {
    Decision::Deny { blocked_by: by }
}

#[test]
fn bare_ips_are_host_routes() {
    let p = policy(
        r#"{"defaultAction":"allow","rules":[
            {"name":"one","cidrs":["192.0.2.7","2001:db8::7"],"action":"deny"}]}"#,
    );
    assert_eq!(p.decide(Some("192.0.2.7:1")), deny("one"));
    assert_eq!(p.decide(Some("192.0.2.8:1")), Decision::Allow);
    assert_eq!(p.decide(Some("[2001:db8::7]:1")), deny("one"));
    assert_eq!(p.decide(Some("[2001:db8::8]:1")), Decision::Allow);
}

#[test]
fn host_bits_set_rejected_with_hint() {
    let e = err(r#"{"defaultAction":"allow","rules":[
            {"cidrs":["10.0.0.0/8"],"action":"deny"},
            {"cidrs":["10.0.0.0/8"],"action":"deny"},
            {"cidrs":["10.0.0.1/8"],"action":"deny"}]}"#);
    assert!(
        e.contains(
            r#"rules[2].cidrs[0]: "10.0.0.1/8" has host bits set (did you mean 10.0.0.0/8?)"#
        ),
        "{e}"
    );
    let e =
        err(r#"{"defaultAction":"allow","rules":[{"cidrs":["2001:db8::1/32"],"action":"deny"}]}"#);
    assert!(e.contains("did you mean 2001:db8::/32?"), "{e}");
}

#[test]
fn malformed_cidrs_rejected() {
    for bad in [
        "10.0.0.0/33",
        "10.0.0/8",
        "300.0.0.0/8",
        "10.0.0.0/",
        "/8",
        "10.0.0.0/-1",
        "2001:db8::/129",
        "garbage",
        "",
        " 10.0.0.0/8",
        "10.0.0.1:80",
    ] {
        let json = format!(
            r#"{{"defaultAction":"allow","rules":[{{"cidrs":["10.0.0.0/8",{bad:?}],"action":"deny"}}]}}"#
        );
        let e = err(&json);
        assert!(e.contains("rules[0].cidrs[1]: "), "{bad}: {e}");
        assert!(e.contains("is not a valid"), "{bad}: {e}");
    }
}

#[test]
fn empty_cidr_list_rejected() {
    let e = err(r#"{"defaultAction":"allow","rules":[{"cidrs":[],"action":"deny"}]}"#);
    assert!(e.contains("rules[0].cidrs: must list at least one"), "{e}");
}

#[test]
fn bad_action_rejected() {
    let e = err(r#"{"defaultAction":"allow","rules":[{"cidrs":["10.0.0.0/8"],"action":"block"}]}"#);
    assert!(
        e.contains("rules[0].action: unknown variant `block`"),
        "{e}"
    );
    let e = err(r#"{"defaultAction":"Allow"}"#);
    assert!(e.contains("defaultAction: unknown variant `Allow`"), "{e}");
    let e = err(r#"{"defaultAction":"allow","rules":[{"cidrs":["10.0.0.0/8"]}]}"#);
    assert!(e.contains("rules[0]: missing field `action`"), "{e}");
}

#[test]
fn default_action_required() {
    let e = err("{}");
    assert!(e.contains("missing field `defaultAction`"), "{e}");
}

#[test]
fn bad_json_reports_line_and_column() {
    let e = err("{\"defaultAction\":\n \"allow\",}");
    assert!(
        e.contains("invalid JSON") && e.contains("line 2 column"),
        "{e}"
    );
    let e = err(r#"{"defaultAction":"allow"}}"#);
    assert!(e.contains("invalid JSON") && e.contains("trailing"), "{e}");
    let e = err("");
    assert!(e.contains("invalid JSON"), "{e}");
    let e = err(r#"{"defaultAction":"allow","rules":{}}"#);
    assert!(e.contains("rules: invalid type"), "{e}");
}

#[test]
fn non_utf8_rejected() {
    let e = AclConfig::from_json(b"{\"defaultAction\":\"allow\",\"x\":\"\xff\"}")
        .unwrap_err()
        .to_string();
    assert!(e.contains("not valid UTF-8 (at byte 30)"), "{e}");
}

#[test]
fn v4_and_v6_kept_apart() {
    // ::/0 must not catch IPv4 clients, 0.0.0.0/0 must not catch IPv6 clients.
    let p = policy(
        r#"{"defaultAction":"allow","rules":[
            {"name":"v6-all","cidrs":["::/0"],"action":"deny"},
            {"name":"v4-ten","cidrs":["10.0.0.0/8"],"action":"deny"}]}"#,
    );
    assert_eq!(p.decide(Some("10.9.9.9:1")), deny("v4-ten"));
    assert_eq!(p.decide(Some("11.0.0.1:1")), Decision::Allow);
    assert_eq!(p.decide(Some("[2001:db8::1]:1")), deny("v6-all"));
    // The IPv6 address whose low 32 bits equal 10.0.0.1 is not 10.0.0.1.
    let p = policy(
        r#"{"defaultAction":"allow","rules":[{"name":"v4-all","cidrs":["0.0.0.0/0"],"action":"deny"}]}"#,
    );
    assert_eq!(p.decide(Some("[::a00:1]:1")), Decision::Allow);
    assert_eq!(p.decide(Some("1.2.3.4:1")), deny("v4-all"));
}

#[test]
fn longest_prefix_wins_regardless_of_order() {
    let rules = [
        r#"{"name":"wide","cidrs":["10.0.0.0/8"],"action":"deny"}"#,
        r#"{"name":"hole","cidrs":["10.1.0.0/16"],"action":"allow"}"#,
        r#"{"name":"pin","cidrs":["10.1.2.3"],"action":"deny"}"#,
        r#"{"name":"v6wide","cidrs":["2001:db8::/32"],"action":"deny"}"#,
        r#"{"name":"v6hole","cidrs":["2001:db8:1::/48"],"action":"allow"}"#,
    ];
    // Every rotation and the reverse: order must not matter.
    let mut orders: Vec<Vec<&str>> = (0..rules.len())
        .map(|k| {
            let mut v = rules.to_vec();
            v.rotate_left(k);
            v
        })
        .collect();
    orders.push(rules.iter().rev().copied().collect());
    for order in orders {
        let p = policy(&format!(
            r#"{{"defaultAction":"allow","rules":[{}]}}"#,
            order.join(",")
        ));
        assert_eq!(p.decide(Some("10.9.9.9:1")), deny("wide"));
        assert_eq!(p.decide(Some("10.1.9.9:1")), Decision::Allow);
        assert_eq!(p.decide(Some("10.1.2.3:1")), deny("pin"));
        assert_eq!(p.decide(Some("10.1.2.4:1")), Decision::Allow);
        assert_eq!(p.decide(Some("[2001:db8:2::1]:1")), deny("v6wide"));
        assert_eq!(p.decide(Some("[2001:db8:1::1]:1")), Decision::Allow);
    }
}

#[test]
fn duplicate_cidr_last_wins() {
    let p = policy(
        r#"{"defaultAction":"allow","rules":[
            {"name":"first","cidrs":["10.0.0.0/8"],"action":"allow"},
            {"name":"second","cidrs":["10.0.0.0/8"],"action":"deny"},
            {"name":"a","cidrs":["192.0.2.1"],"action":"deny"},
            {"name":"b","cidrs":["192.0.2.1/32"],"action":"deny"}]}"#,
    );
    assert_eq!(p.decide(Some("10.1.1.1:1")), deny("second"));
    assert_eq!(p.decide(Some("192.0.2.1:1")), deny("b"));
    // Within one rule's list too, and deny then allow.
    let p = policy(
        r#"{"defaultAction":"deny","rules":[
            {"name":"x","cidrs":["10.0.0.0/8"],"action":"deny"},
            {"name":"y","cidrs":["10.0.0.0/8","10.0.0.0/8"],"action":"allow"}]}"#,
    );
    assert_eq!(p.decide(Some("10.1.1.1:1")), Decision::Allow);
}

#[test]
fn mapped_v6_client_matched_as_v4() {
    let p = policy(
        r#"{"defaultAction":"allow","rules":[
            {"name":"ten","cidrs":["10.0.0.0/8"],"action":"deny"},
            {"name":"v6-all","cidrs":["::/0"],"action":"allow"}]}"#,
    );
    assert_eq!(p.decide(Some("[::ffff:10.1.2.3]:5555")), deny("ten"));
    assert_eq!(p.decide(Some("::ffff:10.1.2.3")), deny("ten"));
    assert_eq!(p.decide(Some("[::ffff:a01:203]:1")), deny("ten"));
    assert_eq!(p.decide(Some("[::ffff:11.1.2.3]:1")), Decision::Allow);
    // A mapped CIDR in the config is the same rule as its IPv4 form.
    let p = policy(
        r#"{"defaultAction":"allow","rules":[
            {"name":"mapped","cidrs":["::ffff:10.0.0.0/104"],"action":"deny"},
            {"name":"pin","cidrs":["::ffff:192.0.2.1"],"action":"deny"}]}"#,
    );
    assert_eq!(p.decide(Some("10.1.2.3:1")), deny("mapped"));
    assert_eq!(p.decide(Some("[::ffff:10.1.2.3]:1")), deny("mapped"));
    assert_eq!(p.decide(Some("192.0.2.1:1")), deny("pin"));
}

#[test]
fn default_action_both_ways() {
    let rules = r#""rules":[{"name":"r","cidrs":["10.0.0.0/8"],"action":"allow"}]"#;
    let p = policy(&format!(r#"{{"defaultAction":"deny",{rules}}}"#));
    assert_eq!(p.decide(Some("11.0.0.1:1")), deny("default"));
    assert_eq!(p.decide(Some("10.0.0.1:1")), Decision::Allow);
    assert_eq!(p.default_action(), Action::Deny);
    let p = policy(r#"{"defaultAction":"allow"}"#);
    assert_eq!(p.decide(Some("11.0.0.1:1")), Decision::Allow);
    assert_eq!(p.decide(Some("[::1]:1")), Decision::Allow);
    assert_eq!(p.default_action(), Action::Allow);
}

#[test]
fn unnamed_rule_blocked_by_is_rule() {
    let p = policy(
        r#"{"defaultAction":"allow","rules":[{"cidrs":["10.0.0.0/8"],"action":"deny"},
            {"name":null,"cidrs":["11.0.0.0/8"],"action":"deny"}]}"#,
    );
    assert_eq!(p.decide(Some("10.0.0.1:1")), deny("rule"));
    assert_eq!(p.decide(Some("11.0.0.1:1")), deny("rule"));
}

#[test]
fn unknown_ip_for_missing_or_garbage() {
    let p = policy(r#"{"defaultAction":"allow"}"#);
    for bad in [
        None,
        Some(""),
        Some("garbage"),
        Some("/var/run/envoy.sock"),
        Some("10.1.2.3:99999"),
        Some("10.1.2.3:"),
        Some("[10.1.2.3]:80"),
        Some("[2001:db8::1]:x"),
        Some("[2001:db8::1"),
        Some("2001:db8::1]:80"),
        Some("10.1.2"),
    ] {
        assert_eq!(p.decide(bad), deny("unknown-ip"), "{bad:?}");
    }
}

#[test]
fn address_forms() {
    let p = policy(
        r#"{"defaultAction":"deny","rules":[
            {"cidrs":["10.1.2.3","2001:db8::1","fe80::1"],"action":"allow"}]}"#,
    );
    for ok in [
        "10.1.2.3:5555",
        "10.1.2.3",
        " 10.1.2.3:5555 ",
        "[2001:db8::1]:443",
        "[2001:db8::1]",
        "2001:db8::1",
        "2001:DB8:0::1",
        "[fe80::1%eth0]:80",
        "fe80::1%eth0",
        "[fe80::1%2]:80",
    ] {
        assert_eq!(p.decide(Some(ok)), Decision::Allow, "{ok}");
    }
    assert_eq!(
        p.decide_ip("10.1.2.3".parse().unwrap()),
        Decision::Allow,
        "decide_ip"
    );
}

#[test]
fn deny_response_headers_in_order_then_blocked_by() {
    let p = policy(
        r#"{"defaultAction":"deny","rules":[{"name":"geo","cidrs":["10.0.0.0/8"],"action":"deny"}],
            "denyResponse":{"statusCode":451,"blockedByHeaderName":"X-Blocked-By",
              "headers":[{"name":"X-Reason","value":"geo-policy"},{"name":"Retry-After","value":"3600"},
                         {"name":"X-Reason","value":"again"}]}}"#,
    );
    let d = p.decide(Some("10.0.0.1:1"));
    let r = p.deny_response(&d).unwrap();
    assert_eq!(r.status, 451);
    assert_eq!(
        r.headers,
        vec![
            ("X-Reason", "geo-policy"),
            ("Retry-After", "3600"),
            ("X-Reason", "again"),
            ("X-Blocked-By", "geo"),
        ]
    );
    let d = p.decide(Some("11.0.0.1:1"));
    assert_eq!(
        p.deny_response(&d).unwrap().headers[3],
        ("X-Blocked-By", "default")
    );
    let d = p.decide(None);
    assert_eq!(
        p.deny_response(&d).unwrap().headers[3],
        ("X-Blocked-By", "unknown-ip")
    );
    assert_eq!(p.deny_response(&Decision::Allow), None);
}

#[test]
fn deny_response_without_blocked_by_header() {
    let p = policy(
        r#"{"defaultAction":"deny","denyResponse":{"headers":[{"name":"x-a","value":""}]}}"#,
    );
    let d = p.decide(Some("1.1.1.1:1"));
    let r = p.deny_response(&d).unwrap();
    assert_eq!(r.status, 403);
    assert_eq!(r.headers, vec![("x-a", "")]);
}

#[test]
fn status_defaults_to_403() {
    for json in [
        r#"{"defaultAction":"deny"}"#,
        r#"{"defaultAction":"deny","denyResponse":{}}"#,
        r#"{"defaultAction":"deny","denyResponse":{"statusCode":null}}"#,
        r#"{"defaultAction":"deny","denyResponse":{"blockedByHeaderName":"x-by"}}"#,
    ] {
        let p = policy(json);
        assert_eq!(p.deny_status(), 403);
        let d = p.decide(None);
        assert_eq!(p.deny_response(&d).unwrap().status, 403, "{json}");
    }
}

#[test]
fn invalid_status_rejected() {
    for code in [
        "0",
        "99",
        "100",
        "199",
        "600",
        "-403",
        "70000",
        "99999999999",
    ] {
        let e = err(&format!(
            r#"{{"defaultAction":"deny","denyResponse":{{"statusCode":{code}}}}}"#
        ));
        assert!(e.contains("denyResponse.statusCode"), "{code}: {e}");
    }
    for code in ["\"403\"", "403.5", "true"] {
        let e = err(&format!(
            r#"{{"defaultAction":"deny","denyResponse":{{"statusCode":{code}}}}}"#
        ));
        assert!(
            e.contains("denyResponse.statusCode: invalid type"),
            "{code}: {e}"
        );
    }
    for code in [200, 403, 451, 503, 599] {
        let p = policy(&format!(
            r#"{{"defaultAction":"deny","denyResponse":{{"statusCode":{code}}}}}"#
        ));
        assert_eq!(p.deny_status(), code);
    }
}

#[test]
fn invalid_headers_rejected() {
    let cases = [
        (r#"{"name":"","value":"v"}"#, "denyResponse.headers[0].name"),
        (
            r#"{"name":"X Bad","value":"v"}"#,
            "denyResponse.headers[0].name",
        ),
        (
            r#"{"name":"X-Bad\r\n","value":"v"}"#,
            "denyResponse.headers[0].name",
        ),
        (
            r#"{"name":":status","value":"200"}"#,
            "denyResponse.headers[0].name",
        ),
        (
            r#"{"name":"x-a","value":"a\r\nSet-Cookie: x"}"#,
            "denyResponse.headers[0].value",
        ),
        (
            r#"{"name":"x-a","value":"a\nb"}"#,
            "denyResponse.headers[0].value",
        ),
        (
            r#"{"name":"x-a","value":"a\u0000b"}"#,
            "denyResponse.headers[0].value",
        ),
        (
            r#"{"name":"x-a","value":"a\u007fb"}"#,
            "denyResponse.headers[0].value",
        ),
        (
            r#"{"name":"x-a"}"#,
            "denyResponse.headers[0]: missing field `value`",
        ),
    ];
    for (h, want) in cases {
        let e = err(&format!(
            r#"{{"defaultAction":"deny","denyResponse":{{"headers":[{h}]}}}}"#
        ));
        assert!(e.contains(want), "{h}: {e}");
    }
    let e = err(r#"{"defaultAction":"deny","denyResponse":{"blockedByHeaderName":"x\nby"}}"#);
    assert!(e.contains("denyResponse.blockedByHeaderName"), "{e}");
    let e = err(r#"{"defaultAction":"deny","denyResponse":{"blockedByHeaderName":""}}"#);
    assert!(e.contains("denyResponse.blockedByHeaderName"), "{e}");
    let e = err(
        r#"{"defaultAction":"deny","rules":[{"name":"a\r\nb","cidrs":["::1"],"action":"deny"}]}"#,
    );
    assert!(e.contains("rules[0].name"), "{e}");
    // Tab and non-ASCII are fine in values and rule names.
    let p = policy(
        r#"{"defaultAction":"deny","rules":[{"name":"règle\t1","cidrs":["::1"],"action":"deny"}],
            "denyResponse":{"headers":[{"name":"x-a","value":"a\tb é"}]}}"#,
    );
    assert_eq!(p.decide(Some("[::1]:1")), deny("règle\t1"));
}

#[test]
fn empty_rules() {
    for json in [
        r#"{"defaultAction":"deny","rules":[]}"#,
        r#"{"defaultAction":"deny","rules":null}"#,
    ] {
        let p = policy(json);
        assert_eq!(p.decide(Some("10.0.0.1:1")), deny("default"));
        assert_eq!(p.decide(Some("[::1]:1")), deny("default"));
    }
}

#[test]
fn unknown_fields_ignored() {
    let p = policy(
        r#"{"defaultAction":"allow","future":{"x":[1,2]},
            "rules":[{"name":"r","cidrs":["10.0.0.0/8"],"action":"deny","priority":5}],
            "denyResponse":{"statusCode":418,"body":"no","headers":[{"name":"x","value":"y","append":true}]}}"#,
    );
    let d = p.decide(Some("10.0.0.1:1"));
    assert_eq!(d, deny("r"));
    assert_eq!(p.deny_response(&d).unwrap().status, 418);
}

#[test]
fn zero_length_prefixes() {
    let p = policy(
        r#"{"defaultAction":"allow","rules":[
            {"name":"all4","cidrs":["0.0.0.0/0"],"action":"deny"},
            {"name":"all6","cidrs":["::/0"],"action":"deny"},
            {"cidrs":["255.255.255.255/32","ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128"],"action":"allow"}]}"#,
    );
    assert_eq!(p.decide(Some("1.2.3.4:1")), deny("all4"));
    assert_eq!(p.decide(Some("[::2]:1")), deny("all6"));
    assert_eq!(p.decide(Some("255.255.255.255:1")), Decision::Allow);
    assert_eq!(
        p.decide(Some("[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:1")),
        Decision::Allow
    );
}

#[test]
fn many_rules_every_prefix_length() {
    // 2,000+ rules over all prefix lengths; sampled clients are checked against a brute-force
    // longest-prefix scan (last rule wins on ties) to confirm the table agrees.
    let mut rules: Vec<(IpNet, String, Action)> = Vec::new();
    for i in 0..2000u32 {
        let a = i.wrapping_mul(2_654_435_761) & 0xffff_ff00;
        let net = Ipv4Net::new(Ipv4Addr::from(a), 24).unwrap();
        let action = if i % 2 == 0 {
            Action::Deny
        } else {
            Action::Allow
        };
        rules.push((IpNet::V4(net), format!("r{i}"), action));
    }
    for len in 0..=32u8 {
        let net = Ipv4Net::new(Ipv4Addr::new(10, 20, 30, 40), len)
            .unwrap()
            .trunc();
        let action = if len % 2 == 0 {
            Action::Deny
        } else {
            Action::Allow
        };
        rules.push((IpNet::V4(net), format!("p{len}"), action));
    }
    for len in 0..=128u8 {
        let net = Ipv6Net::new("2001:db8::1".parse().unwrap(), len)
            .unwrap()
            .trunc();
        rules.push((IpNet::V6(net), format!("q{len}"), Action::Deny));
    }
    let json_rules: Vec<String> = rules
        .iter()
        .map(|(net, name, action)| {
            let action = if *action == Action::Deny {
                "deny"
            } else {
                "allow"
            };
            format!(r#"{{"name":"{name}","cidrs":["{net}"],"action":"{action}"}}"#)
        })
        .collect();
    let p = policy(&format!(
        r#"{{"defaultAction":"allow","rules":[{}]}}"#,
        json_rules.join(",")
    ));
    assert_eq!(p.decide(Some("10.20.30.40:1")), deny("p32"));
    assert_eq!(p.decide(Some("10.20.30.41:1")), Decision::Allow); // p31 allows
    assert_eq!(p.decide(Some("[2001:db8::1]:1")), deny("q128"));
    assert_eq!(p.decide(Some("[2001:db8::3]:1")), deny("q126"));
    assert_eq!(p.decide(Some("[8000::]:1")), deny("q0"));
    for i in (0..2000u32).step_by(7) {
        let a = i.wrapping_mul(2_654_435_761) & 0xffff_ff00;
        for client in [
            Ipv4Addr::from(a | 0x55),
            Ipv4Addr::from(a.wrapping_add(0x100)),
        ] {
            let mut best: Option<(u8, &(IpNet, String, Action))> = None;
            for rule in &rules {
                if let IpNet::V4(net) = rule.0
                    && net.contains(&client)
                    && best.is_none_or(|(l, _)| net.prefix_len() >= l)
                {
                    best = Some((net.prefix_len(), rule));
                }
            }
            let want = match best {
                Some((_, (_, name, Action::Deny))) => deny(name),
                _ => Decision::Allow,
            };
            assert_eq!(p.decide_ip(IpAddr::V4(client)), want, "{client}");
        }
    }
}

#[test]
fn error_display_names_field() {
    let e = AclConfig::from_json(
        br#"{"defaultAction":"allow","rules":[{"cidrs":["10.0.0.1/8"],"action":"deny"}]}"#,
    )
    .unwrap_err();
    assert_eq!(e.field.as_deref(), Some("rules[0].cidrs[0]"));
    assert_eq!(
        e.to_string(),
        r#"http-acl config: rules[0].cidrs[0]: "10.0.0.1/8" has host bits set (did you mean 10.0.0.0/8?)"#
    );
}

#[test]
fn policy_is_send_sync() {
    fn check<T: Send + Sync>() {}
    check::<AclPolicy>();
}
