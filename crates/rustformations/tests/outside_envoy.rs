//! The module's filter run outside Envoy, as the command-line tool runs it: the host's options
//! replace what the module takes from Envoy's process. Options are per process, so this file
//! (its own test process) holds one test that sets them once.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use envoy_module::HttpFilter;
use envoy_module::testing::{Delivery, FakeEnvoy, FakeFilterConfigEnvoy, HeaderMap, HttpMessage};
use rustformations::outside_envoy::{OutsideEnvoyOptions, set_outside_envoy_options, take_reports};
use rustformations::{RUSTFORMATION, new_filter_config, new_per_route_config};
use transformations::marker::Marker;
use transformations::{KgatewayRelease, Options};

fn message(headers: &[(&str, &str)], body: &str) -> HttpMessage {
    HttpMessage {
        headers: HeaderMap::from_pairs(headers.iter().copied()),
        body: body.as_bytes().to_vec(),
        trailers: HeaderMap::new(),
    }
}

/// A stream through `rustformation` with `{}` on the listener and `policy` on the route, as
/// kgateway configures it.
fn route_stream(policy: &str) -> (Box<dyn HttpFilter>, FakeEnvoy) {
    let config =
        new_filter_config(&mut FakeFilterConfigEnvoy::new(), RUSTFORMATION, b"{}").unwrap();
    let mut envoy = FakeEnvoy::new();
    envoy.per_route = Some(new_per_route_config(RUSTFORMATION, policy.as_bytes()).unwrap());
    (config.new_filter(), envoy)
}

#[test]
fn the_hosts_options_replace_envoys_process_and_are_set_once_before_any_load() {
    let start = UNIX_EPOCH + Duration::from_millis(1_795_700_786_123);
    let options = OutsideEnvoyOptions {
        compile: Options {
            env: Arc::new(|name| (name == "RF_HOST").then(|| "from-the-host".to_owned())),
            release: KgatewayRelease::V2_4,
            ..Options::default()
        },
        marker: Some(Marker {
            name: "x-handled".into(),
            value: "yes".into(),
        }),
        start_time: Some(start),
        keep_reports: true,
    };
    set_outside_envoy_options(options.clone()).unwrap();

    let (mut filter, mut envoy) = route_stream(
        r#"{"request":{"set":[
               {"name":"x-env","value":"{{ env(\"RF_HOST\") }}"},
               {"name":"x-dup-read","value":"{{ header(\"x-dup\") }}"},
               {"name":"x-start","value":"%START_TIME%"},
               {"name":"x-bad","value":"{{ \"a\" + 1 }}"}]}}"#,
    );
    let request = message(
        &[
            (":method", "GET"),
            (":path", "/"),
            ("x-dup", "one"),
            ("x-dup", "two"),
        ],
        "",
    );
    assert_eq!(
        envoy.send_request(&mut *filter, request),
        Ok(Delivery::Forwarded)
    );
    let sent = |name: &str| envoy.request_headers.get_str(name);
    assert_eq!(sent("x-env").as_deref(), Some("from-the-host"));
    assert_eq!(
        sent("x-dup-read").as_deref(),
        Some("one, two"),
        "v2.4 joins"
    );
    assert_eq!(sent("x-start").as_deref(), Some("2026-11-26T13:46:26.123Z"));
    let reports = take_reports();
    assert_eq!(
        reports
            .warnings
            .iter()
            .map(|w| w.field.as_str())
            .collect::<Vec<_>>(),
        ["request.set[3].value"]
    );
    assert_eq!(reports.reply_reason, None);
    assert_eq!(
        envoy.send_response(&mut *filter, message(&[(":status", "200")], "")),
        Ok(Delivery::Forwarded)
    );
    assert_eq!(
        envoy.response_headers.get_str("x-handled").as_deref(),
        Some("yes")
    );
    assert_eq!(envoy.response_headers.get_str("x-custom-transformed"), None);

    // A local reply carries the host's marker, and the host learns why it was sent.
    let (mut filter, mut envoy) =
        route_stream(r#"{"request":{"set":[{"name":"x","value":"{{ model }}"}]}}"#);
    let request = message(&[(":method", "GET"), (":path", "/")], "");
    assert_eq!(
        envoy.send_request(&mut *filter, request),
        Ok(Delivery::LocalReply)
    );
    let reply = envoy.local_reply.as_ref().unwrap();
    assert_eq!(reply.status, 400);
    assert_eq!(reply.headers, [("x-handled".to_string(), b"yes".to_vec())]);
    let reason = take_reports().reply_reason.unwrap();
    assert!(reason.contains("model"), "{reason}");

    let err = set_outside_envoy_options(options).unwrap_err();
    assert_eq!(
        err,
        "outside-Envoy options must be set before any config is loaded"
    );
}
