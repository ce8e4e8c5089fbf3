//! Behaviour tests: dynamic metadata written, and `metadata()` read.

use super::*;

#[test]
fn dynamic_metadata_entries_render_and_empty_ones_are_skipped_with_a_warning() {
    let t = compile(
        r#"{"request":{"dynamicMetadata":[
            {"namespace":"ns","key":"k","value":{"stringValue":"{{ header('x') }}"}},
            {"namespace":"ns","key":"empty","value":{"stringValue":"{{ header('nope') }}"}},
            {"namespace":"","key":"k","value":{"stringValue":"v"}}]}}"#,
    );
    assert_eq!(
        t.warnings(),
        ["request.dynamicMetadata[2] ignored: empty namespace"]
    );
    let mut info = MemoryStreamInfo::default();
    let mut msg = MemoryMessage::new(&[("x", "v")], "");
    t.apply_request(&mut msg, BodyMode::HeadersOnly, &mut info)
        .unwrap();
    assert_eq!(
        info.dynamic_metadata,
        vec![("ns".into(), "k".into(), "v".into())]
    );
}

#[test]
fn the_last_metadata_entry_for_a_key_decides_even_when_empty() {
    // The replaced entries never run: not even their missing variable answers a 400.
    let t = compile(
        r#"{"request":{"dynamicMetadata":[
            {"namespace":"ns","key":"a","value":{"stringValue":"{{ never_read }}"}},
            {"namespace":"ns","key":"b","value":{"stringValue":"kept"}},
            {"namespace":"ns","key":"a","value":{"stringValue":"{{ 'x'|no_such_filter }}"}},
            {"namespace":"other","key":"a","value":{"stringValue":"1"}},
            {"namespace":"ns","key":"c","value":{"stringValue":"c1"}},
            {"namespace":"ns","key":"c","value":{"stringValue":"c2"}}]}}"#,
    );
    let mut info = MemoryStreamInfo::default();
    let mut msg = MemoryMessage::new(&[], "");
    t.apply_request(&mut msg, BodyMode::Buffered, &mut info)
        .unwrap();
    let set: Vec<_> = info
        .dynamic_metadata
        .iter()
        .map(|(ns, k, v)| format!("{ns}/{k}={v}"))
        .collect();
    assert_eq!(set, ["ns/b=kept", "other/a=1", "ns/c=c2"]);
}

#[test]
fn metadata_reads_only_the_named_pairs_once_per_side() {
    let t = compile(
        r#"{"request":{"set":[
            {"name":"x-tenant","value":"{{ metadata('envoy.lb', 'tenant') }}"},
            {"name":"x-again","value":"{{ metadata('envoy.lb', 'tenant') }}-{{ metadata('envoy.lb', 'tenant', source='dynamic') }}"},
            {"name":"x-route","value":"{{ metadata('team', 'owner', 'route') }}"},
            {"name":"x-absent","value":"{{ metadata('envoy.lb', 'nope') }}"}]},
          "response":{"set":[{"name":"x-tenant","value":"{{ metadata('envoy.lb', 'tenant') }}"}]}}"#,
    );
    let mut info = MemoryStreamInfo::default()
        .with_metadata(MetadataSource::Dynamic, "envoy.lb", "tenant", "acme")
        .with_metadata(MetadataSource::Route, "team", "owner", "payments")
        .with_metadata(MetadataSource::Dynamic, "other", "unread", "x");
    let mut msg = MemoryMessage::new(&[], "");
    t.apply_request(&mut msg, BodyMode::HeadersOnly, &mut info)
        .unwrap();
    assert_eq!(msg.header("x-tenant").as_deref(), Some("acme"));
    assert_eq!(msg.header("x-again").as_deref(), Some("acme-acme"));
    assert_eq!(msg.header("x-route").as_deref(), Some("payments"));
    assert_eq!(msg.header("x-absent"), None, "absent renders empty");
    assert_eq!(
        info.metadata_reads.get(),
        3,
        "three distinct pairs, each read once"
    );
    let snapshot = t.capture_request_headers(&msg);
    let mut response = MemoryMessage::new(&[(":status", "200")], "");
    t.apply_response(&mut response, &snapshot, BodyMode::HeadersOnly, &mut info)
        .unwrap();
    assert_eq!(response.header("x-tenant").as_deref(), Some("acme"));
    assert_eq!(
        info.metadata_reads.get(),
        4,
        "the response side reads its one pair"
    );
}

#[test]
fn metadata_arguments_must_be_literals() {
    for (value, want) in [
        ("{{ metadata(header('a'), 'k') }}", "string literals"),
        ("{{ metadata('ns') }}", "string literals"),
        (
            "{{ metadata('ns', 'k', source='filter') }}",
            "unknown source",
        ),
        ("{{ metadata('ns', 'k', 'route', 'x') }}", "string literals"),
        ("{{ metadata('ns', 'k', other='x') }}", "unknown argument"),
    ] {
        let e = compile_err(&set1(value));
        assert_eq!(e.location(), Some("request.set[0].value"), "{value}");
        assert!(e.message().contains(want), "{value}: {e}");
    }
}
