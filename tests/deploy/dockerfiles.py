"""Reading the Dockerfiles and `.dockerignore` the way a builder does (without a builder)."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from dockerfile_parse import DockerfileParser

from tests.support.workspace import ROOT


@dataclass(frozen=True)
class Instruction:
    name: str  # upper case: FROM, COPY, RUN, ...
    value: str
    line: int  # 1-based


@dataclass
class Stage:
    base: str
    alias: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, name: str) -> list[Instruction]:
        return [i for i in self.instructions if i.name == name]

    def last(self, name: str) -> Instruction | None:
        found = self.all(name)
        return found[-1] if found else None


@dataclass(frozen=True)
class Copy:
    flags: dict[str, str]
    sources: tuple[str, ...]
    dest: str
    line: int


def stages(path: Path) -> list[Stage]:
    """The build stages of a Dockerfile, each with its instructions (comments dropped)."""
    parser = DockerfileParser(path=str(path))
    result: list[Stage] = []
    for item in parser.structure:
        name = str(item["instruction"]).upper()
        value = str(item["value"])
        if name == "COMMENT":
            continue
        if name == "FROM":
            words = value.split()
            alias = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            result.append(Stage(words[0], alias))
            continue
        assert result, f"{path}: {name} before any FROM"
        result[-1].instructions.append(Instruction(name, value, int(item["startline"]) + 1))
    return result


def parse_copy(instruction: Instruction) -> Copy:
    words = shlex.split(instruction.value)
    flags = {}
    while words and words[0].startswith("--"):
        key, _, val = words.pop(0)[2:].partition("=")
        flags[key] = val
    assert len(words) >= 2, f"line {instruction.line}: COPY needs a source and a destination"
    return Copy(flags, tuple(words[:-1]), words[-1], instruction.line)


def exec_form(instruction: Instruction) -> list[str] | None:
    """The JSON array of an exec-form ENTRYPOINT/CMD, or None for the shell form."""
    try:
        value = json.loads(instruction.value)
    except json.JSONDecodeError:
        return None
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    return None


def run_commands(instruction: Instruction) -> list[list[str]]:
    """A RUN's commands (split on &&), without its --mount/--network flags."""
    words = shlex.split(instruction.value)
    while words and words[0].startswith("--"):
        words.pop(0)
    commands: list[list[str]] = [[]]
    for word in words:
        if word == "&&":
            commands.append([])
        else:
            commands[-1].append(word)
    return [c for c in commands if c]


# -- .dockerignore ------------------------------------------------------------------------


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out)


@cache
def _ignore_rules() -> tuple[tuple[bool, re.Pattern[str]], ...]:
    rules = []
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line[1:] if negated else line
        pattern = pattern.strip().strip("/")
        rules.append((negated, _pattern_regex(pattern)))
    return tuple(rules)


def ignored(path: str) -> bool:
    """Whether `path` (relative to the context root) is left out of the build context.

    Docker's rules: the last matching line wins, `!` lines bring paths back, and a pattern
    that matches a folder matches everything under it.
    """
    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    result = False
    for negated, regex in _ignore_rules():
        if any(regex.fullmatch(p) for p in prefixes):
            result = not negated
    return result
