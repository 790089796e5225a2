"""The root Dockerfile and `.dockerignore` read the way a builder does (there is no builder
here), and its build stage replayed into a scratch folder: the virtualenv an image ships."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from dockerfile_parse import DockerfileParser

from tests.support.workspace import ROOT

DOCKERFILE = ROOT / "Dockerfile"
#: The build argument that picks the component (the workspace member `switchyard-<it>`).
COMPONENT_ARG = "COMPONENT"
_FLAG = re.compile(r"\s*--(\S+)\s+")


@dataclass(frozen=True)
class Instruction:
    name: str  # upper case: FROM, COPY, RUN, ...
    value: str
    line: int  # 1-based
    #: The build arguments and environment in effect at this instruction.
    args: Mapping[str, str] = field(default_factory=dict)
    envs: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass
class Stage:
    base: str  # build arguments filled in
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


@dataclass(frozen=True)
class Run:
    """A shell-form RUN: its `--mount`s (each as its key=value options) and its command."""

    mounts: tuple[dict[str, str], ...]
    command: str
    line: int

    def binds(self) -> list[dict[str, str]]:
        return [m for m in self.mounts if m.get("type", "bind") == "bind"]


def stages(component: str) -> list[Stage]:
    """The Dockerfile's stages as built with `--build-arg COMPONENT=<component>`."""
    parser = DockerfileParser(path=str(DOCKERFILE), build_args={COMPONENT_ARG: component})
    bases = iter(parser.parent_images)  # FROM images with the build arguments filled in
    result: list[Stage] = []
    for item, context in zip(parser.structure, parser.context_structure, strict=True):
        name = str(item["instruction"]).upper()
        value = str(item["value"])
        if name == "FROM":
            words = value.split()
            alias = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            result.append(Stage(next(bases), alias))
        elif name != "COMMENT" and result:  # ARGs before the first FROM are in the bases
            result[-1].instructions.append(
                Instruction(
                    name,
                    value,
                    int(item["startline"]) + 1,
                    dict(context.args),
                    dict(context.envs),
                    dict(context.labels),
                )
            )
    return result


def parse_copy(instruction: Instruction) -> Copy:
    words = shlex.split(instruction.value)
    flags = {}
    while words and words[0].startswith("--"):
        key, _, val = words.pop(0)[2:].partition("=")
        flags[key] = val
    assert len(words) >= 2, f"line {instruction.line}: COPY needs a source and a destination"
    return Copy(flags, tuple(words[:-1]), words[-1], instruction.line)


def parse_run(instruction: Instruction) -> Run:
    """A RUN's leading flags peeled off; the rest is the command `/bin/sh -c` runs."""
    text = instruction.value
    mounts = []
    while match := _FLAG.match(text):
        key, _, options = match.group(1).partition("=")
        assert key == "mount", f"line {instruction.line}: RUN --{key} is not replayed"
        mounts.append(dict(option.partition("=")[::2] for option in options.split(",")))
        text = text[match.end() :]
    return Run(tuple(mounts), text.strip(), instruction.line)


def exec_form(instruction: Instruction) -> list[str] | None:
    """The JSON array of an exec-form ENTRYPOINT/CMD, or None for the shell form."""
    try:
        value = json.loads(instruction.value)
    except json.JSONDecodeError:
        return None
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    return None


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


def context_files(root: Path = ROOT) -> Iterator[str]:
    """The files of `root` the build context holds (relative paths). A folder left out is
    not entered: the `.dockerignore` here brings nothing back from under one."""
    for folder, dirs, files in os.walk(root):
        here = Path(folder).relative_to(root)
        dirs[:] = sorted(d for d in dirs if not ignored(str(here / d)))
        for name in sorted(files):
            if not ignored(str(here / name)):
                yield str(here / name)


def copy_context(source: str, target: Path, root: Path = ROOT) -> None:
    """`source` of the context (a file, a folder or `.`) at `target`, as COPY puts it."""
    for path in context_files(root):
        if source in (".", "./"):
            relative = path
        elif path == source:
            relative = ""
        elif path.startswith(source.rstrip("/") + "/"):
            relative = path[len(source.rstrip("/")) + 1 :]
        else:
            continue
        destination = target / relative if relative else target
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / path, destination)


# -- the build stage, replayed --------------------------------------------------------------


def replay_build(component: str, scratch: Path, context: Path = ROOT) -> Path:
    """Replay the build stage's local COPY and RUN steps for `component` in `scratch` and
    return the virtualenv they made (the image's `UV_PROJECT_ENVIRONMENT`).

    Paths in the image map into `scratch`: the stage's WORKDIR to `scratch/src` and the
    virtualenv to `scratch/venv`. Bind mounts exist during their RUN only; cache mounts are
    uv's own cache here. Bytecode is not compiled and files may be linked from uv's cache
    (`UV_COMPILE_BYTECODE`, `UV_LINK_MODE`): what is installed is the same, only faster to make.
    The interpreter is this test's Python (the image's base Python is the same minor version).
    `context` is the build context (the repository's root, filtered by its `.dockerignore`).
    """
    build = stages(component)[0]
    workdir_instruction = build.last("WORKDIR")
    assert workdir_instruction is not None, "the build stage sets WORKDIR"
    image_workdir = workdir_instruction.value
    workdir = scratch / "src"
    workdir.mkdir(parents=True)
    venv = scratch / "venv"
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    assert uv, "uv not found"

    def local(path: str) -> Path:
        if path == image_workdir or path.startswith(image_workdir.rstrip("/") + "/"):
            return workdir / path[len(image_workdir) :].lstrip("/")
        assert not path.startswith("/"), f"{path}: outside WORKDIR, not replayed"
        return workdir / path

    for instruction in build.instructions:
        if instruction.name == "COPY":
            copy = parse_copy(instruction)
            if "from" in copy.flags:
                continue  # another image's files (uv itself): not replayed
            for source in copy.sources:
                copy_context(source, local(copy.dest), context)
        elif instruction.name == "RUN":
            run = parse_run(instruction)
            bound = []
            for mount in run.binds():
                target = local(mount["target"])
                if target != workdir:
                    assert not target.exists(), f"line {run.line}: a bind over {target}"
                    bound.append(target)
                copy_context(mount.get("source", "."), target, context)
            env = {
                **os.environ,
                **instruction.args,
                **instruction.envs,
                "UV_PROJECT_ENVIRONMENT": str(venv),
                "UV_PYTHON": sys.executable,
                "UV_COMPILE_BYTECODE": "0",
                "UV_LINK_MODE": "hardlink",
                "UV_NO_PROGRESS": "1",
                "PATH": f"{Path(uv).parent}{os.pathsep}{os.environ['PATH']}",
            }
            env.pop("VIRTUAL_ENV", None)
            result = subprocess.run(
                ["/bin/sh", "-c", run.command],
                cwd=workdir,
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert result.returncode == 0, (
                f"line {run.line} failed for {component}:\n{result.stdout}{result.stderr}"
            )
            for target in bound:  # a bind mount leaves nothing behind
                if target.is_dir():
                    shutil.rmtree(target)
                else:
                    target.unlink()
    return venv
