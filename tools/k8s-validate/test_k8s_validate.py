"""The validator must pass the real k8s/ base and catch what an API server would reject."""
from __future__ import annotations

import copy

import pytest

import k8s_validate as kv

K8S_DIR = kv.REPO / "k8s"


@pytest.fixture(scope="module")
def docs() -> list[dict]:
    return kv.render_kustomize(K8S_DIR)


def by_kind(docs: list[dict], kind: str) -> dict:
    (doc,) = [d for d in docs if d["kind"] == kind]
    return doc


def run(docs: list[dict]) -> kv.Report:
    return kv.validate_documents(docs, kv.DEFAULT_CRD_DIR)


def replace(docs: list[dict], new: dict) -> list[dict]:
    return [new if (d["kind"], d["metadata"]["name"]) == (new["kind"], new["metadata"]["name"]) else d
            for d in docs]


def test_real_base_passes(docs):
    report = run(docs)
    assert report.ok, "\n".join(map(str, report.errors))
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == ["Backend", "Deployment", "Gateway", "GatewayParameters", "HTTPRoute",
                     "Service", "TrafficPolicy"]
    assert report.checked_rules > 0


def test_every_document_is_in_default_namespace(docs):
    assert {d["metadata"]["namespace"] for d in docs} == {"default"}


def test_unknown_field_in_custom_resource(docs):
    route = copy.deepcopy(by_kind(docs, "HTTPRoute"))
    route["spec"]["rules"][0]["timeout"] = "5s"  # the real field is `timeouts`
    report = run(replace(docs, route))
    assert any(e.path == ".spec.rules[0]" and "timeout" in e.message for e in report.errors), report.errors


def test_unknown_field_in_core_resource(docs):
    dep = copy.deepcopy(by_kind(docs, "Deployment"))
    dep["spec"]["template"]["spec"]["containers"][0]["envv"] = []
    report = run(replace(docs, dep))
    assert any("envv" in e.message for e in report.errors), report.errors


def test_unknown_metadata_field(docs):
    backend = copy.deepcopy(by_kind(docs, "Backend"))
    backend["metadata"]["label"] = {"a": "b"}
    report = run(replace(docs, backend))
    assert [e.path for e in report.errors] == [".metadata.label"]


def test_bad_enum_parse_as_json(docs):
    policy = copy.deepcopy(by_kind(docs, "TrafficPolicy"))
    policy["spec"]["transformation"]["response"]["body"] = {"parseAs": "Json", "value": "{{ body() }}"}
    report = run(replace(docs, policy))
    assert any(e.path == ".spec.transformation.response.body.parseAs" and "'Json' is not one of" in e.message
               for e in report.errors), report.errors


def test_cel_violation_replace_full_path_without_value(docs):
    route = copy.deepcopy(by_kind(docs, "HTTPRoute"))
    path = route["spec"]["rules"][0]["filters"][0]["urlRewrite"]["path"]
    del path["replaceFullPath"]
    report = run(replace(docs, route))
    cel_errors = [e for e in report.errors if e.message.startswith("CEL:")]
    assert cel_errors, report.errors
    assert all(e.path == ".spec.rules[0].filters[0].urlRewrite.path" for e in cel_errors)
    assert any("replaceFullPath must be specified when type is set to 'ReplaceFullPath'" in e.message
               for e in cel_errors), cel_errors
    # Only CEL knows this rule: the plain schema has nothing to say about it.
    assert len(report.errors) == len(cel_errors)


def test_defaults_are_applied_before_cel(docs):
    # Backend.spec.static.hosts items need host+port; the defaulted `parseAs`
    # of a TrafficPolicy body must not show up as an unknown or missing field.
    policy = copy.deepcopy(by_kind(docs, "TrafficPolicy"))
    policy["spec"]["transformation"]["request"] = {"body": {"value": "x"}}
    report = run(replace(docs, policy))
    assert report.ok, report.errors
    defaulted = kv.apply_defaults(kv.load_crds(kv.DEFAULT_CRD_DIR)[
        ("gateway.kgateway.dev", "v1alpha1", "TrafficPolicy")], copy.deepcopy(policy))
    assert defaulted["spec"]["transformation"]["request"]["body"]["parseAs"] == "AsString"


def test_kind_without_schema_fails(docs):
    grpc = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GRPCRoute",
            "metadata": {"name": "x", "namespace": "default"}, "spec": {}}
    report = run(docs + [grpc])
    assert any("no CRD schema" in e.message for e in report.errors)
    unknown = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    assert not run([unknown]).ok


def test_unknown_core_kind_fails():
    report = run([{"apiVersion": "v1", "kind": "Nonsense", "metadata": {"name": "n"}}])
    assert any("no schema" in e.message for e in report.errors)


def test_unevaluable_rules_are_reported_not_failed():
    cel = kv.CelRunner()
    ok, why = cel.evaluate("isIP(self)", "10.0.0.1")
    assert ok is None and why
    ok, why = cel.evaluate("self == oldSelf", "a")
    assert ok is None and "oldSelf" in why
    assert cel.evaluate("self.size() > 1", "ab") == (True, "")
    assert cel.evaluate("self.size() > 1", "a") == (False, "")


def test_gateway_parameters_image_matches_makefile_image(docs):
    image = by_kind(docs, "GatewayParameters")["spec"]["kube"]["envoyContainer"]["image"]
    assert image["registry"] == "" and image["pullPolicy"] == "IfNotPresent"
    mk = (kv.REPO / "mk" / "kind.mk").read_text()
    assert f"IMAGE_REPO ?= {image['repository']}\n" in mk
    assert f"IMAGE_TAG ?= {image['tag']}\n" in mk
