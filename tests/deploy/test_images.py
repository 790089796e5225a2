"""Each image holds what its component imports, and nothing else: the Dockerfile's build
stage is replayed for each component into a scratch folder, and the virtualenv it makes
(what the image ships) is checked by running it and by reading its modules' imports."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass

import pytest
from packaging.utils import canonicalize_name

from tests.deploy.dockerfile import replay_build
from tests.deploy.virtualenv import ImportGraph, Virtualenv, import_graph
from tests.support.workspace import components

pytestmark = pytest.mark.slow

COMPONENTS = sorted(components())
WORKSPACE_PREFIX = "switchyard-"

#: What each image must not carry: the other components' dependencies (the adapter
#: framework's HTTP client and gRPC reflection, the edge's web framework, kopf, ...).
NOT_CARRIED = {
    "edge": {"aiohttp", "grpcio-reflection", "kopf"},
    "operator": {"fastapi", "starlette", "grpcio-reflection", "redis"},  # kopf brings aiohttp
    "adapter-vllm": {"fastapi", "kopf", "redis", "lightkube"},
    "adapter-sglang": {"fastapi", "kopf", "redis", "lightkube"},
    "adapter-tgi": {"fastapi", "kopf", "redis", "lightkube"},
    "enginesim": {"fastapi", "kopf", "redis", "lightkube", "grpcio-reflection", "aiohttp"},
}

#: Distributions the standard library reads as data, never imported by name: `zoneinfo`
#: falls back to `tzdata` where the system has no zone files (slim images have none).
STDLIB_DATA = {"zoneinfo": "tzdata"}

#: Run in the image's interpreter: its command's entry point, then every module of the
#: Switchyard packages it holds (`__main__` modules run when imported: read, not run).
PROBE = """
import importlib, json, sys
from importlib.metadata import distribution
dist, script, modules = sys.argv[1], sys.argv[2], sys.argv[3:]
result = {"command": None, "failed": []}
try:
    (ep,) = distribution(dist).entry_points.select(group="console_scripts", name=script)
    ep.load()
except Exception as exc:
    result["command"] = f"{script}: {exc!r}"
for name in modules:
    try:
        importlib.import_module(name)
    except Exception as exc:
        result["failed"].append(f"{name}: {exc!r}")
print(json.dumps(result))
"""


@dataclass(frozen=True)
class Image:
    component: str
    venv: Virtualenv
    graph: ImportGraph

    @property
    def dist(self) -> str:
        return WORKSPACE_PREFIX + self.component

    def workspace_dists(self) -> set[str]:
        return {d for d in self.venv.dists if d.startswith(WORKSPACE_PREFIX)}

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.venv.python), *args],
            cwd=self.venv.root,  # not the repository: only what the virtualenv holds
            capture_output=True,
            text=True,
            timeout=120,
            env={k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")},
        )


@pytest.fixture(scope="module", params=COMPONENTS)
def image(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Image:
    component: str = request.param
    venv = Virtualenv(replay_build(component, tmp_path_factory.mktemp(component)))
    return Image(component, venv, import_graph(venv, WORKSPACE_PREFIX + component))


def test_the_image_has_its_command_and_imports_every_module(image: Image) -> None:
    entrypoint = image.venv.root / "bin" / "switchyard"
    assert os.readlink(entrypoint) == f"switchyard-{image.component}"
    modules = sorted(
        name
        for name, module in image.venv.modules.items()
        if module.dist.startswith(WORKSPACE_PREFIX) and not name.endswith(".__main__")
    )
    result = image.run("-c", PROBE, image.dist, f"switchyard-{image.component}", *modules)
    assert result.returncode == 0, result.stderr
    probe = json.loads(result.stdout)
    assert probe["command"] is None, probe["command"]
    failed = "\n".join(probe["failed"])
    assert not failed, f"the {image.component} image cannot import:\n{failed}"


def test_every_import_lands_in_the_image(image: Image) -> None:
    assert not image.graph.unresolved


def test_the_image_holds_only_the_libraries_its_component_imports(image: Image) -> None:
    reached = {image.venv.modules[m].dist for m in image.graph.reached}
    assert image.workspace_dists() == reached


def test_the_image_holds_nothing_its_imports_do_not_need(image: Image) -> None:
    """Every third-party distribution is needed by an import of the component's modules or
    of the libraries they reach, with the extras their importer asks for. A library is
    installed whole, so what it declares is needed too (the modules of it a component does
    not import may)."""
    venv = image.venv
    roots: set[tuple[str, frozenset[str]]] = set()
    for importer, provider in image.graph.third_party:
        extras = [
            r.extras
            for r in venv.requirements(importer.dist)
            if canonicalize_name(r.name) == provider.dist
        ]
        roots.add((provider.dist, frozenset().union(*extras)))
    libraries = image.workspace_dists() - {image.dist}
    for library in libraries:
        roots.update(
            (canonicalize_name(r.name), frozenset(r.extras))
            for r in venv.requirements(library)
            if not r.name.startswith(WORKSPACE_PREFIX)
        )
    roots.update((STDLIB_DATA[m], frozenset()) for m in image.graph.stdlib & STDLIB_DATA.keys())
    needed = venv.closure(roots) | image.workspace_dists()
    assert set(venv.dists) - needed == set(), "installed for nothing the component imports"


def test_the_image_holds_the_data_its_standard_library_imports_read(image: Image) -> None:
    """A component that imports `zoneinfo` carries `tzdata`: the image has no zone files."""
    wanted = {STDLIB_DATA[m] for m in image.graph.stdlib & STDLIB_DATA.keys()}
    assert wanted <= set(image.venv.dists)
    if image.component == "edge":  # budgets' periods are in a named time zone
        assert wanted == {"tzdata"}


def test_the_image_holds_nothing_of_the_other_components(image: Image) -> None:
    assert NOT_CARRIED[image.component]
    assert set(image.venv.dists) & NOT_CARRIED[image.component] == set()
