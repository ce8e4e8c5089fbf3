#!/usr/bin/env python3
"""Offline, strict validation of the lab's Kubernetes manifests.

What a real API server would reject, checked without a cluster:
  * core kinds against the Kubernetes OpenAPI schemas shipped by
    `kubernetes-validate` (its "strict" variant: unknown fields are errors);
  * custom resources against the `openAPIV3Schema` of the matching CRD version
    found under the CRD directory, with unknown fields rejected the way the API
    server prunes/rejects them (strict field validation), after applying schema
    defaults (structural defaulting), then the CRD's `x-kubernetes-validations`
    CEL rules evaluated with `self` bound at the node that declares them.

A kind with no schema is a failure. CEL rules this evaluator cannot run (e.g. a
Kubernetes CEL library function the python CEL implementation lacks, or a
transition rule that needs `oldSelf`) are listed, not failed.

Usage: k8s_validate.py [--crd-dir DIR] [--k8s-version X.Y.Z]
                       (--kustomize DIR | FILE ...)
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterable

import jsonschema
import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
DEFAULT_CRD_DIR = Path(os.environ.get("CRD_DIR", REPO.parent / "shared" / "crds"))
# A version kind (the lab's cluster tool) runs by default; kubernetes-validate carries it.
DEFAULT_K8S_VERSION = os.environ.get("K8S_VERSION", "1.33.0")

# ObjectMeta fields a client may send; CRD schemas only say `type: object` for
# metadata, so strictness there is ours to provide.
OBJECT_META_FIELDS = {
    "name", "generateName", "namespace", "labels", "annotations", "finalizers",
    "ownerReferences", "uid", "resourceVersion", "generation", "creationTimestamp",
    "deletionTimestamp", "deletionGracePeriodSeconds", "managedFields", "selfLink",
}


@dataclasses.dataclass
class Problem:
    doc: str
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.doc}: {self.path or '<root>'}: {self.message}"


@dataclasses.dataclass
class Report:
    errors: list[Problem] = dataclasses.field(default_factory=list)
    skipped_rules: list[Problem] = dataclasses.field(default_factory=list)
    checked_rules: int = 0
    documents: int = 0

    @property
    def ok(self) -> bool:
        return not self.errors


# --------------------------------------------------------------------------- CRDs

@functools.lru_cache(maxsize=None)  # the tests validate many variants against one CRD dir
def load_crds(crd_dir: Path) -> dict[tuple[str, str, str], dict]:
    """Map (group, version, kind) -> openAPIV3Schema for every CRD under crd_dir."""
    if not crd_dir.is_dir():
        raise SystemExit(f"CRD directory not found: {crd_dir} (set CRD_DIR, or run `make crds`)")
    index: dict[tuple[str, str, str], dict] = {}
    for path in sorted(crd_dir.rglob("*.y*ml")):
        with open(path, encoding="utf-8") as fh:
            for doc in yaml.safe_load_all(fh):
                if not isinstance(doc, dict) or doc.get("kind") != "CustomResourceDefinition":
                    continue
                spec = doc["spec"]
                for ver in spec.get("versions", []):
                    if not ver.get("served", True):
                        continue
                    schema = (ver.get("schema") or {}).get("openAPIV3Schema")
                    if schema:
                        index[(spec["group"], ver["name"], spec["names"]["kind"])] = schema
    if not index:
        raise SystemExit(f"no CustomResourceDefinition found under {crd_dir}")
    return index


def _child_schema(schema: dict, key: Any) -> dict | None:
    if isinstance(key, int):
        return schema.get("items")
    props = schema.get("properties") or {}
    if key in props:
        return props[key]
    extra = schema.get("additionalProperties")
    return extra if isinstance(extra, dict) else None


def apply_defaults(schema: dict, value: Any) -> Any:
    """Structural defaulting as the API server does it: a missing property with a
    `default` gets it, recursively, only inside objects that are present."""
    if isinstance(value, dict):
        for key, sub in (schema.get("properties") or {}).items():
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
        for key in list(value):
            sub = _child_schema(schema, key)
            if sub is not None:
                value[key] = apply_defaults(sub, value[key])
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            value[i] = apply_defaults(schema["items"], item)
    return value


def to_json_schema(schema: dict) -> dict:
    """Turn a structural CRD schema into a JSON Schema that rejects unknown fields."""
    out: dict[str, Any] = {}
    for key, val in schema.items():
        if key == "properties":
            out[key] = {k: to_json_schema(v) for k, v in val.items()}
        elif key in ("items", "not") and isinstance(val, dict):
            out[key] = to_json_schema(val)
        elif key == "additionalProperties" and isinstance(val, dict):
            out[key] = to_json_schema(val)
        elif key in ("allOf", "anyOf", "oneOf"):
            out[key] = [to_json_schema(v) for v in val]
        elif key.startswith("x-kubernetes-") or key in ("nullable", "format", "default"):
            continue  # handled below or not a JSON Schema constraint
        else:
            out[key] = val
    if schema.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if schema.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    is_object = schema.get("type") == "object"
    if (is_object and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
            and "properties" in schema):
        out["additionalProperties"] = False
    return out


# ---------------------------------------------------------------------------- CEL

class CelRunner:
    """Evaluates x-kubernetes-validations with cel-python, caching compiled rules."""

    def __init__(self) -> None:
        import celpy  # imported lazily so --help works without it

        self.celpy = celpy
        self.env = celpy.Environment()
        self.cache: dict[str, Any] = {}

    def program(self, rule: str):
        if rule not in self.cache:
            try:
                self.cache[rule] = self.env.program(self.env.compile(rule))
            except Exception as exc:  # noqa: BLE001 - any parse failure means "cannot evaluate"
                self.cache[rule] = exc
        return self.cache[rule]

    def evaluate(self, rule: str, value: Any) -> tuple[bool | None, str]:
        """(True/False, '') when evaluated; (None, reason) when it cannot be."""
        if "oldSelf" in rule:
            return None, "transition rule (needs oldSelf; not applicable on create)"
        prog = self.program(rule)
        if isinstance(prog, Exception):
            return None, f"does not compile here: {type(prog).__name__}: {_short(prog)}"
        try:
            result = prog.evaluate({"self": self.celpy.json_to_cel(value)})
        except Exception as exc:  # noqa: BLE001
            return None, f"{type(exc).__name__}: {_short(exc)}"
        if isinstance(result, self.celpy.CELEvalError):
            return None, f"CELEvalError: {_short(result)}"
        if isinstance(result, bool) or type(result).__name__ == "BoolType":
            return bool(result), ""
        return None, f"non-boolean result {result!r}"


def _short(exc: Any) -> str:
    text = str(exc.args[0] if getattr(exc, "args", None) else exc)
    text = text.split(" (in activation")[0]
    return text[:160]


def check_cel(schema: dict, value: Any, path: str, doc: str, cel: CelRunner, report: Report) -> None:
    if value is None:
        return
    for rule in schema.get("x-kubernetes-validations") or []:
        expr = rule["rule"]
        ok, why = cel.evaluate(expr, value)
        shown = " ".join(expr.split())
        if ok is None:
            report.skipped_rules.append(Problem(doc, path, f"{why}: {shown}"))
            continue
        report.checked_rules += 1
        if not ok:
            msg = rule.get("message") or rule.get("messageExpression") or f"failed rule: {shown}"
            field = rule.get("fieldPath", "")
            report.errors.append(Problem(doc, path + field, f"CEL: {msg} (rule: {shown})"))
    if isinstance(value, dict):
        for key, sub_value in value.items():
            sub = _child_schema(schema, key)
            if sub is not None:
                check_cel(sub, sub_value, f"{path}.{key}", doc, cel, report)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            check_cel(schema["items"], item, f"{path}[{i}]", doc, cel, report)


# ----------------------------------------------------------------------- documents

def doc_name(doc: dict) -> str:
    meta = doc.get("metadata") or {}
    ns = meta.get("namespace")
    return f"{doc.get('kind')}/{(ns + '/') if ns else ''}{meta.get('name')}"


def _fmt_path(parts: Iterable[Any]) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else f".{p}"
    return out


def validate_custom(doc: dict, schema: dict, name: str, cel: CelRunner, report: Report) -> None:
    obj = apply_defaults(schema, copy.deepcopy(doc))
    for key in (obj.get("metadata") or {}):
        if key not in OBJECT_META_FIELDS:
            report.errors.append(Problem(name, f".metadata.{key}", "unknown field"))
    validator = jsonschema.Draft7Validator(to_json_schema(schema))
    for err in sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path)):
        report.errors.append(Problem(name, _fmt_path(err.absolute_path), err.message))
    check_cel(schema, obj, "", name, cel, report)


def validate_core(doc: dict, name: str, k8s_version: str, report: Report) -> None:
    import kubernetes_validate
    from kubernetes_validate import utils as kv

    try:
        kubernetes_validate.validate(doc, k8s_version, strict=True)
    except kv.ValidationError as err:
        report.errors.append(Problem(name, _fmt_path(err.path), err.message))
    except kv.SchemaNotFoundError as err:
        report.errors.append(Problem(name, "", f"no schema: {err.message}"))


def validate_documents(docs: list[dict], crd_dir: Path, k8s_version: str = DEFAULT_K8S_VERSION) -> Report:
    crds = load_crds(crd_dir)
    crd_groups = {g for (g, _, _) in crds}
    cel = CelRunner()
    report = Report()
    for doc in docs:
        if not doc:
            continue
        report.documents += 1
        name = doc_name(doc)
        api_version = doc.get("apiVersion", "")
        group, _, version = api_version.rpartition("/")
        kind = doc.get("kind", "")
        schema = crds.get((group, version, kind))
        if schema is not None:
            validate_custom(doc, schema, name, cel, report)
        elif group in crd_groups or "." in group and not group.endswith(".k8s.io"):
            report.errors.append(Problem(name, "", f"no CRD schema for {api_version} {kind} in {crd_dir}"))
        else:
            validate_core(doc, name, k8s_version, report)
    return report


def kubectl_binary() -> str:
    venv_kubectl = REPO / ".tools" / "venv" / "bin" / "kubectl"
    found = os.environ.get("KUBECTL") or (str(venv_kubectl) if venv_kubectl.exists() else shutil.which("kubectl"))
    if not found:
        raise SystemExit("kubectl not found (run `make tools`, or set KUBECTL)")
    return found


def render_kustomize(directory: Path) -> list[dict]:
    out = subprocess.run([kubectl_binary(), "kustomize", str(directory)],
                         check=True, capture_output=True, text=True)
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def load_files(paths: list[str]) -> list[dict]:
    docs: list[dict] = []
    for p in paths:
        with open(p, encoding="utf-8") as fh:
            docs.extend(d for d in yaml.safe_load_all(fh) if d)
    return docs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--crd-dir", type=Path, default=DEFAULT_CRD_DIR)
    ap.add_argument("--k8s-version", default=DEFAULT_K8S_VERSION)
    ap.add_argument("--kustomize", type=Path, help="render this kustomization with `kubectl kustomize`")
    ap.add_argument("files", nargs="*")
    args = ap.parse_args(argv)
    if not args.kustomize and not args.files:
        ap.error("give --kustomize DIR or files")
    docs = render_kustomize(args.kustomize) if args.kustomize else load_files(args.files)
    report = validate_documents(docs, args.crd_dir, args.k8s_version)
    for skipped in report.skipped_rules:
        print(f"CEL-SKIPPED {skipped}")
    for err in report.errors:
        print(f"ERROR {err}")
    print(f"{report.documents} documents, {report.checked_rules} CEL rules evaluated, "
          f"{len(report.skipped_rules)} CEL rules not evaluable here, {len(report.errors)} errors "
          f"(Kubernetes {args.k8s_version}, CRDs from {args.crd_dir})")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
