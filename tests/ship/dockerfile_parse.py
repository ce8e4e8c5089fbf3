"""A small Dockerfile reader: enough to check stages and instructions, no more."""
from __future__ import annotations

import dataclasses
import json
import re
import shlex


@dataclasses.dataclass
class Instruction:
    cmd: str  # upper-case keyword
    args: str  # raw text after the keyword, continuation lines joined
    line: int

    def flags_and_words(self) -> tuple[dict[str, str], list[str]]:
        """Split `--flag=value` options from the remaining words (shell-form)."""
        flags: dict[str, str] = {}
        words: list[str] = []
        for word in shlex.split(self.args):
            if not words and word.startswith("--"):
                key, _, val = word[2:].partition("=")
                flags[key] = val
            else:
                words.append(word)
        return flags, words

    def exec_form(self) -> list[str] | None:
        text = self.args.strip()
        if text.startswith("["):
            return json.loads(text)
        return None


@dataclasses.dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction]

    def of(self, cmd: str) -> list[Instruction]:
        return [i for i in self.instructions if i.cmd == cmd]


@dataclasses.dataclass
class Dockerfile:
    global_args: dict[str, str | None]
    stages: list[Stage]
    instructions: list[Instruction]

    def stage(self, name: str) -> Stage:
        (found,) = [s for s in self.stages if s.name == name]
        return found


def parse(text: str) -> Dockerfile:
    instructions: list[Instruction] = []
    buf, start = "", 0
    for lineno, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if buf and stripped.startswith("#"):
            continue  # comment lines inside a continuation are dropped by Docker
        if not buf:
            start = lineno
        if stripped.endswith("\\"):
            buf += stripped[:-1].rstrip() + " "
            continue
        buf += stripped
        cmd, _, args = buf.partition(" ")
        instructions.append(Instruction(cmd.upper(), args.strip(), start))
        buf = ""
    global_args: dict[str, str | None] = {}
    stages: list[Stage] = []
    for ins in instructions:
        if ins.cmd == "FROM":
            m = re.match(r"(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?\s*$", ins.args, re.IGNORECASE)
            assert m, f"cannot parse FROM on line {ins.line}"
            stages.append(Stage(m.group(1), m.group(2), []))
        elif not stages:
            if ins.cmd == "ARG":
                key, eq, val = ins.args.partition("=")
                global_args[key.strip()] = val.strip() if eq else None
        else:
            stages[-1].instructions.append(ins)
    return Dockerfile(global_args, stages, instructions)
