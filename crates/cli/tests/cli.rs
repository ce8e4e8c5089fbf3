//! The built `rustformations` binary: arguments, output and exit codes.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

fn cli(args: &[&str]) -> Output {
    run(args, None)
}

fn run(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rustformations"))
        .args(args)
        .current_dir(repo())
        .env_remove("RUSTFORMATION_MARKER_HEADER")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    let mut input = child.stdin.take().unwrap();
    if let Some(bytes) = stdin {
        // The tool stops reading past its input bound: a broken pipe is expected then.
        let _ = input.write_all(bytes);
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn temp(name: &str, content: &[u8]) -> String {
    let dir = std::env::temp_dir().join(format!("rustformations-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path.display().to_string()
}

const BROKEN: &str = "apiVersion: gateway.kgateway.dev/v1alpha1
kind: TrafficPolicy
metadata:
  name: broken
  namespace: team
spec:
  transformation:
    response:
      set:
        - name: x-ok
          value: fine
        - name: x-smart
          value: |
            line one
            {{ request_header(':path') | upper }
";

#[test]
fn validate_the_repositorys_manifests() {
    let o = cli(&["validate", "k8s/"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("ok TrafficPolicy/default/my-smart-header-filter\n"),
        "{out}"
    );
    // The lab's operators are resolved here; kgateway's own module would send them as text.
    assert!(out.contains("k8s/trafficpolicy.yaml:17: warning:"), "{out}");
    assert_eq!(
        cli(&["validate", "--deny-warnings", "k8s/"]).status.code(),
        Some(1)
    );
}

#[test]
fn validate_names_file_line_field_and_template_position() {
    let file = temp("broken.yaml", BROKEN.as_bytes());
    let o = cli(&["validate", &file]);
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    let want = format!(
        "{file}:15: error: TrafficPolicy/team/broken: spec.transformation.response.set[1].value \
         (template line 2, column 36): invalid template at response.set[1].value: syntax error"
    );
    assert!(out.contains(&want), "{out}");

    let o = cli(&["validate", "--format", "json", &file]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let e = &v["errors"][0];
    assert_eq!(e["line"], 15);
    assert_eq!(e["template_line"], 2);
    assert_eq!(e["field"], "spec.transformation.response.set[1].value");
}

#[test]
fn validate_reports_warnings_kgateway_would_hit() {
    let policy = r#"{"apiVersion": "gateway.kgateway.dev/v1alpha1", "kind": "TrafficPolicy",
 "metadata": {"name": "w"},
 "spec": {"transformation": {"request": {"set": [
   {"name": "x-model", "value": "{{ model }}"},
   {"name": "x y", "value": "v"},
   {"name": "x-j", "value": "{{ header('a') | tojson }}"}]}}}}"#;
    let o = run(&["validate", "-"], Some(policy.as_bytes()));
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    let out = stdout(&o);
    assert!(out.contains("<stdin>:4: warning: TrafficPolicy/default/w: spec.transformation.request.set[0].value: reads model which only a JSON body provides"), "{out}");
    assert!(
        out.contains("request.set[1] ignored: \"x y\" is not a valid header name"),
        "{out}"
    );
    assert!(out.contains("`tojson` filter"), "{out}");
}

#[test]
fn validate_envoy_configs_and_acl() {
    let envoy = r#"
static_resources:
  listeners:
  - filter_chains:
    - filters:
      - typed_config:
          http_filters:
          - name: dynamic_modules/simple_mutations
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter
              dynamic_module_config: {name: rust_module}
              filter_name: rustformation
              filter_config:
                "@type": type.googleapis.com/google.protobuf.StringValue
                value: '{"request":{"set":[{"name":"x","value":"{{ oops"}]}}'
---
apiVersion: gateway.kgateway.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: acl}
spec:
  acl: {defaultAction: deny, rules: [{cidrs: ["10.0.0.1/8"], action: allow}]}
"#;
    let o = run(&["validate", "-"], Some(envoy.as_bytes()));
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    assert!(
        out.contains("<stdin>:15: error: DynamicModuleFilter/rustformation:"),
        "{out}"
    );
    assert!(out.contains("TrafficPolicy/default/acl: spec.acl"), "{out}");
}

#[test]
fn bad_input_is_a_clear_error_never_a_panic() {
    for (args, input, needle) in [
        (vec!["validate", "/no/such/file.yaml"], None, "cannot read"),
        (vec!["validate", "-"], Some(&b"a: [1\n"[..]), "not YAML"),
        (
            vec!["validate", "-"],
            Some(b"- just\n- a list\n"),
            "not a Kubernetes object",
        ),
        (vec!["validate", "-"], Some(b"\xff\xfe binary"), "not UTF-8"),
    ] {
        let o = run(&args, input);
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        assert!(stdout(&o).contains(needle), "{args:?}: {}", stdout(&o));
        assert!(!stderr(&o).contains("panicked"));
    }
    let request = temp("not-http.txt", b"hello there\n");
    let o = cli(&["render", "k8s/trafficpolicy.yaml", &request]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("not an HTTP/1.1 request"),
        "{}",
        stderr(&o)
    );

    let huge = vec![b'a'; 17 * 1024 * 1024];
    let o = run(&["validate", "-"], Some(&huge));
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("larger than 16 MiB"), "{}", stdout(&o));

    let o = cli(&["render", "k8s/trafficpolicy.yaml"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("render needs a request"));
    let o = cli(&["frobnicate"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn render_the_labs_request() {
    let o = cli(&[
        "render",
        "k8s/trafficpolicy.yaml",
        "-X",
        "POST",
        "-H",
        "content-type: application/json",
        "-d",
        r#"{"model":"gpt-4"}"#,
        "/v1/chat/completions",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("+ x-smart-header: method=POST&path=/v1/chat/completions\n"),
        "{out}"
    );
    assert!(out.contains("+ x-custom-transformed: true\n"), "{out}");
    assert!(
        out.contains("POST /v1/chat/completions HTTP/1.1\n"),
        "{out}"
    );
}

#[test]
fn render_a_400_and_binary_bodies() {
    let policy = temp(
        "p.json",
        br#"{"request":{"set":[{"name":"x","value":"{{ model }}"}]}}"#,
    );
    let o = cli(&["render", &policy, "--format", "json", "/a"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["upstream_request"], serde_json::Value::Null);
    assert_eq!(v["client_response"]["status"], 400);
    assert_eq!(
        v["client_response"]["details"],
        "undeclared json variables in transformation template"
    );

    let policy = temp(
        "b.json",
        br#"{"response":{"set":[{"name":"x-len","value":"{{ body() | length }}"}]}}"#,
    );
    let body = temp("bin", &[0u8, 1, 2, 255, 254]);
    let o = cli(&[
        "render",
        &policy,
        "--response-body",
        &format!("@{body}"),
        "/a",
    ]);
    let out = stdout(&o);
    assert!(out.contains("<binary body, 5 bytes>"), "{out}");
    assert!(out.contains("+ x-len: "), "{out}");
}

#[test]
fn render_from_a_request_file_with_operators_from_flags() {
    let policy = temp(
        "ops.json",
        br#"{"request":{"set":[{"name":"x-ip","value":"%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT% %START_TIME% {{ env('RF_CLI_TEST') }}"}]}}"#,
    );
    let request = temp(
        "req.http",
        b"GET /x HTTP/1.1\r\nHost: example\r\nX-A: 1\r\n\r\n",
    );
    let o = cli(&[
        "render",
        &policy,
        &request,
        "--remote-address",
        "192.0.2.7:1234",
        "--start-time",
        "2026-11-26T13:46:26.123Z",
        "--env",
        "RF_CLI_TEST=yes",
    ]);
    let out = stdout(&o);
    assert!(
        out.contains("+ x-ip: 192.0.2.7 2026-11-26T13:46:26.123Z yes\n"),
        "{out}"
    );
    assert!(out.contains("  host: example\n"), "{out}");
}

#[test]
fn explain_shows_the_compiled_plan() {
    let o = cli(&["explain", "k8s/trafficpolicy.yaml"]);
    let out = stdout(&o);
    assert!(out.contains("request side: pass-through"), "{out}");
    assert!(out.contains("response side: headers-only"), "{out}");
    assert!(
        out.contains(
            "response.set[1].value -> set x-smart-header: operators %REQ(:method)% %REQ(:path)%"
        ),
        "{out}"
    );
    let policy = temp(
        "json.json",
        br#"{"request":{"body":{"parseAs":"AsJson","value":"{{ model }}"}}}"#,
    );
    let o = cli(&["explain", "--format", "json", &policy]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["request"]["action"], "buffered");
    assert_eq!(v["request"]["values"][0]["kind"], "template");
    assert_eq!(v["request"]["values"][0]["json_variables"][0], "model");
}

#[test]
fn render_reads_metadata_and_validate_warns_about_functions_kgateway_lacks() {
    let policy = temp(
        "md.json",
        br#"{"request":{"set":[{"name":"x-tenant","value":"{{ metadata(\"auth\", \"tenant\") }}"},
            {"name":"x-team","value":"{{ metadata(\"team.example\", \"name\", \"route\") }}"}]}}"#,
    );
    let o = cli(&[
        "render",
        &policy,
        "--metadata",
        "auth:tenant=acme",
        "--metadata",
        "route/team.example:name=blue",
        "/a",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("+ x-tenant: acme\n"), "{out}");
    assert!(out.contains("+ x-team: blue\n"), "{out}");

    let o = cli(&["render", &policy, "--metadata", "nowhere/a:b=c", "/a"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("unknown source \"nowhere\""),
        "{}",
        stderr(&o)
    );

    let policy = temp(
        "md.yaml",
        br#"apiVersion: gateway.kgateway.dev/v1alpha1
kind: TrafficPolicy
metadata:
  name: md
spec:
  transformation:
    request:
      set:
        - name: x-tenant
          value: '{{ metadata("auth", "tenant") }}'
"#,
    );
    let o = cli(&["validate", &policy]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "warnings alone do not fail: {}",
        stdout(&o)
    );
    assert!(
        stdout(&o).contains("calls `metadata()`, which only this module offers"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn render_runs_the_filter_as_envoy_would_buffering_only_what_it_must() {
    let policy = temp(
        "buffers.json",
        br#"{"request":{"body":{"value":"B {{ body() }}"},"set":[{"name":"x","value":"[{{ body() }}]"}]},
             "response":{"set":[{"name":"x-err","value":"{{ \"a\" + 1 }}"}],"body":{"value":"R"}}}"#,
    );
    // A WebSocket upgrade never buffers: the body templates read nothing, the body passes.
    let o = cli(&[
        "render",
        &policy,
        "--format",
        "json",
        "-H",
        "upgrade: websocket",
        "-d",
        "frame",
        "/a",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stderr(&o), "", "the filter's log stays out of the output");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["request_side"]["action"], "headers-only");
    assert_eq!(v["upstream_request"]["body"], "frame");
    let headers = &v["upstream_request"]["headers"];
    assert!(
        headers
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["name"] == "x" && h["value"] == "[]"),
        "{headers}"
    );
    assert_eq!(v["response_side"]["action"], "headers-only");

    // Otherwise both sides buffer, and each side's warnings are its own.
    let o = cli(&["render", &policy, "--format", "json", "-d", "frame", "/a"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["request_side"]["action"], "buffered");
    assert_eq!(v["request_side"]["warnings"], serde_json::json!([]));
    assert_eq!(v["upstream_request"]["body"], "B frame");
    assert_eq!(v["response_side"]["action"], "buffered");
    assert_eq!(
        v["response_side"]["warnings"][0]["field"],
        "response.set[0].value"
    );
    assert_eq!(v["client_response"]["body"], "R");
}
