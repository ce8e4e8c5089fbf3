"""Structure of the Dockerfile: stages, the module's path, pins that agree with the repo."""
from __future__ import annotations

import os
import re
import subprocess
import tomllib
from pathlib import Path

import pytest

from dockerfile_parse import Dockerfile, parse

REPO = Path(__file__).resolve().parents[2]
ARTIFACT = "target/release/librust_module.so"
MODULE = "/usr/local/lib/librust_module.so"


@pytest.fixture(scope="module")
def df() -> Dockerfile:
    return parse((REPO / "Dockerfile").read_text())


def make_default(var: str) -> str:
    """The value `make` gives VAR with no overrides (the Makefile includes mk/*.mk)."""
    makefile = REPO / "Makefile"
    env = {k: v for k, v in os.environ.items() if k not in (var, "MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    out = subprocess.run(
        ["make", "--no-print-directory", "-s", "-f", str(makefile),
         "--eval", f"ship-print-var: ; @echo '$({var})'", "ship-print-var"],
        cwd=REPO, env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_stages_in_order_with_kgateway_last(df):
    assert [s.name for s in df.stages] == ["builder", "standalone", "kgateway"]


def test_versions_are_pinned_once_before_the_first_stage(df):
    for name in ("RUST_VERSION", "KGATEWAY_VERSION", "ENVOY_VERSION"):
        assert df.global_args.get(name), f"ARG {name}=<value> missing before the first FROM"
    # Inside stages the ARGs are only re-declared (no second default to drift).
    for stage in df.stages:
        for arg in stage.of("ARG"):
            assert "=" not in arg.args, f"stage {stage.name} sets a default again: ARG {arg.args}"


def test_rust_version_matches_toolchain(df):
    toolchain = tomllib.loads((REPO / "rust-toolchain.toml").read_text())["toolchain"]["channel"]
    assert df.global_args["RUST_VERSION"] == toolchain


def test_envoy_and_kgateway_versions_match_makefile(df):
    assert df.global_args["ENVOY_VERSION"] == make_default("ENVOY_VERSION")
    assert df.global_args["KGATEWAY_VERSION"] == make_default("KGATEWAY_VERSION")


def test_no_per_envoy_build_knob_is_left(df):
    """One module for every Envoy: no cargo feature or ABI string chosen at build time."""
    for name in ("ENVOY_FEATURE", "ENVOY_ABI_VERSION"):
        assert name not in df.global_args
        for stage in df.stages:
            assert not any(a.args.split("=")[0] == name for a in stage.of("ARG")), (stage.name, name)
    # The one feature left is envoy-module's `testing` (the fake Envoy, for tests only), never
    # on by default; nothing picks an Envoy at build time.
    allowed = {"envoy-module": {"testing"}, "rustformations": set(), "module": set()}
    for crate, features in allowed.items():
        manifest = REPO / "crates" / crate / "Cargo.toml"
        declared = tomllib.loads(manifest.read_text()).get("features", {})
        # (`default` is not allowed either: nothing is on unless a test asks.)
        assert set(declared) <= features, f"{manifest} has build features {sorted(set(declared) - features)}"


def test_builder_builds_the_one_module(df):
    builder = df.stage("builder")
    assert builder.base == "rust:${RUST_VERSION}-bookworm"
    runs = " ".join(r.args for r in builder.of("RUN"))
    assert re.search(r"cargo build --release -p rust-module(?! --features)", runs), runs
    assert "--features" not in runs and "--no-default-features" not in runs, runs
    assert ARTIFACT in runs  # the artifact lands at the usual path


def module_copies(stage) -> list:
    found = []
    for ins in stage.of("COPY"):
        flags, words = ins.flags_and_words()
        if words and words[-1] == MODULE:
            found.append((flags, words))
    return found


@pytest.mark.parametrize("stage_name", ["standalone", "kgateway"])
def test_module_copied_from_artifact_path(df, stage_name):
    copies = module_copies(df.stage(stage_name))
    assert len(copies) == 1, copies
    flags, words = copies[0]
    assert flags.get("from") == "builder"
    assert words[:-1] == [f"/src/{ARTIFACT}"]
    assert int(flags.get("chmod", "0644"), 8) & 0o005 == 0o005, "must be readable+executable by others"


def test_standalone_stage(df):
    st = df.stage("standalone")
    assert st.base == "envoyproxy/envoy:v${ENVOY_VERSION}"
    envs = " ".join(e.args for e in st.of("ENV"))
    assert "ENVOY_DYNAMIC_MODULES_SEARCH_PATH=/usr/local/lib" in envs
    configs = [c.flags_and_words()[1] for c in st.of("COPY")]
    assert ["envoy.yaml", "/etc/envoy/envoy.yaml"] in configs
    (user,) = st.of("USER")
    assert user.args.split(":")[0] not in ("0", "root", "")
    (entrypoint,) = st.of("ENTRYPOINT")
    (cmd,) = st.of("CMD")
    assert entrypoint.exec_form() == ["/usr/local/bin/envoy"]
    argv = cmd.exec_form()
    assert argv[argv.index("-c") + 1] == "/etc/envoy/envoy.yaml"
    assert (REPO / "envoy.yaml").exists()


def test_kgateway_stage_only_replaces_the_module(df):
    kg = df.stage("kgateway")
    assert kg.base == "cr.kgateway.dev/kgateway-dev/envoy-wrapper:${KGATEWAY_VERSION}"
    for forbidden in ("ENTRYPOINT", "CMD", "USER", "RUN", "ENV", "WORKDIR"):
        assert not kg.of(forbidden), f"kgateway stage must not set {forbidden}"
    assert [i.cmd for i in kg.instructions] == ["COPY"]


def test_dockerignore_keeps_context_small():
    lines = {ln.strip() for ln in (REPO / ".dockerignore").read_text().splitlines()}
    for entry in ("target/", ".tools/", ".work/", ".git"):
        assert entry in lines
    # The build context must still hold what the builder copies.
    assert not {"crates/", "Cargo.toml", "envoy.yaml"} & lines


def test_parser_handles_continuations_and_comments():
    df = parse("ARG A=1\nFROM x:${A} AS one\n# c\nRUN a \\\n  # inner\n  b\nFROM y AS two\n")
    assert df.global_args == {"A": "1"}
    assert [s.name for s in df.stages] == ["one", "two"]
    assert df.stage("one").of("RUN")[0].args == "a b"
