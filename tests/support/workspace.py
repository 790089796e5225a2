"""Facts about the repository the deployment tests check against: the workspace members,
the lock, skaffold's artifacts, the Makefile's pinned uv."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
SKAFFOLD = ROOT / "skaffold.yaml"
CHART = ROOT / "charts" / "switchyard"


@dataclass(frozen=True)
class Member:
    """One uv workspace member: its folder and distribution name."""

    path: str  # relative to ROOT
    dist: str


@cache
def root_pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


@cache
def members() -> tuple[Member, ...]:
    found = []
    for pattern in root_pyproject()["tool"]["uv"]["workspace"]["members"]:
        for folder in sorted(ROOT.glob(pattern)):
            pyproject = folder / "pyproject.toml"
            if pyproject.is_file():
                name = tomllib.loads(pyproject.read_text())["project"]["name"]
                found.append(Member(str(folder.relative_to(ROOT)), name))
    return tuple(found)


def components() -> dict[str, Member]:
    """The deployable members (under `services/`) by component name, which is also their
    folder's and their image's: the distribution's name without `switchyard-`."""
    return {
        m.dist.removeprefix("switchyard-"): m for m in members() if m.path.startswith("services/")
    }


@cache
def lock_packages() -> dict[str, dict[str, Any]]:
    """uv.lock's packages by name."""
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    return {p["name"]: p for p in lock["package"]}


def workspace_closure(dist: str) -> set[str]:
    """`dist` and every workspace member it depends on (per the lock), transitively."""
    by_dist = {m.dist for m in members()}
    seen: set[str] = set()
    todo = [dist]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        deps = lock_packages()[name].get("dependencies", [])
        todo.extend(dep["name"] for dep in deps if dep["name"] in by_dist)
    return seen


@cache
def uv_version() -> str:
    """The uv version the Makefile pins (and so the Dockerfile must)."""
    match = re.search(r"^UV_VERSION\s*:?=\s*(\S+)", (ROOT / "Makefile").read_text(), re.M)
    assert match, "Makefile: UV_VERSION not found"
    return match.group(1)


@cache
def skaffold() -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(SKAFFOLD.read_text())
    return config


def template_var(image: str) -> str:
    """skaffold's template variable for an artifact's full reference: the characters a Go
    template name cannot hold ("-", "/", ".") become "_"."""
    return "IMAGE_FULLY_QUALIFIED_" + re.sub(r"[^A-Za-z0-9_]", "_", image)


def skaffold_artifacts() -> dict[str, dict[str, Any]]:
    """skaffold's build artifacts by image name."""
    return {a["image"]: a for a in skaffold()["build"]["artifacts"]}
