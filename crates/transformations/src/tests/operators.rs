//! Behaviour tests: Envoy command operators in values.

use super::*;

#[test]
fn resp_operator_is_empty_in_request_phase() {
    assert_eq!(
        render("[%RESP(:status)%]", &[(":status", "x")], "").as_deref(),
        Some("[]")
    );
}

#[test]
fn command_operators_resolve_in_text_and_stay_literal_inside_markup() {
    let t = compile(
        r#"{"request":{"set":[
            {"name":"x-plain","value":"m=%REQ(:METHOD)%&p=%REQ(:path):3%&a=%REQ(x-none?X-Alt)%&pct=100%%"},
            {"name":"x-jinja","value":"{{ header(':method')|lower }} %PROTOCOL% %START_TIME% {{ '%REQ(:path)%' }}"},
            {"name":"x-addr","value":"%DOWNSTREAM_REMOTE_ADDRESS%/%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"}]}}"#,
    );
    let mut info = MemoryStreamInfo {
        protocol: Some("HTTP/2".into()),
        start_time: Some(UNIX_EPOCH + Duration::from_millis(1_795_700_786_123)),
        downstream_remote_address: Some("10.0.0.1:5555".parse().unwrap()),
        ..MemoryStreamInfo::default()
    };
    let mut msg = MemoryMessage::new(
        &[(":method", "GET"), (":path", "/abcdef"), ("x-alt", "alt")],
        "",
    );
    t.apply_request(&mut msg, BodyMode::HeadersOnly, &mut info)
        .unwrap();
    assert_eq!(
        msg.header("x-plain").as_deref(),
        Some("m=GET&p=/ab&a=alt&pct=100%")
    );
    assert_eq!(
        msg.header("x-jinja").as_deref(),
        Some("get HTTP/2 2026-11-26T13:46:26.123Z %REQ(:path)%"),
        "operators resolve in text, not inside Jinja expressions"
    );
    assert_eq!(
        msg.header("x-addr").as_deref(),
        Some("10.0.0.1:5555/10.0.0.1")
    );
}

#[test]
fn missing_stream_info_renders_empty() {
    assert_eq!(
        render(
            "[%PROTOCOL%][%START_TIME%][%DOWNSTREAM_REMOTE_ADDRESS%]",
            &[],
            ""
        )
        .as_deref(),
        Some("[][][]")
    );
}

#[test]
fn literal_percent_text_is_kept() {
    assert_eq!(
        render("50% of a%2Fb", &[], "").as_deref(),
        Some("50% of a%2Fb")
    );
    assert_eq!(render("{{ 1 }}% done", &[], "").as_deref(), Some("1% done"));
}

/// Found by the `operators` fuzz target: a `:N` truncation of usize::MAX overflowed when added
/// to the output position (a panic in debug builds, a wrong cut of earlier text in release).
#[test]
fn truncation_length_at_usize_max_keeps_the_whole_value() {
    let config = format!(
        r#"{{"request":{{"set":[{{"name":"x-a","value":"p%REQ(x-b):{}%"}}]}}}}"#,
        usize::MAX
    );
    let t = Transformation::from_json(config.as_bytes()).unwrap();
    let mut request = MemoryMessage::new(&[("x-b", "value")], "");
    apply(&t, &mut request, BodyMode::HeadersOnly).unwrap();
    assert_eq!(request.header("x-a").as_deref(), Some("pvalue"));
}
