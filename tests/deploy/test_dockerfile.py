"""The one Dockerfile: every image from one definition (the component is a build argument),
multi-stage on one pinned Python, dependencies from the lock before the sources, non-root,
exec-form entrypoint. Read the way a builder reads it (there is no builder here);
`test_images.py` replays its build stage."""

from __future__ import annotations

import re
import shlex
import subprocess
import tomllib

import pytest

from tests.deploy.dockerfile import (
    COMPONENT_ARG,
    DOCKERFILE,
    Instruction,
    Run,
    Stage,
    exec_form,
    ignored,
    parse_copy,
    parse_run,
    stages,
)
from tests.support.workspace import ROOT, components, skaffold_artifacts, uv_version

COMPONENTS = sorted(components())
PYTHON_BASE = re.compile(r"^python:3\.11\.\d+-slim(-[a-z]+)?$")
_VARIABLE = re.compile(r"\$\{(\w+)(?::\?[^}]*)?\}|\$(\w+)")


def expand(text: str, instruction: Instruction) -> str:
    """`$X`, `${X}` and `${X:?message}` with the build arguments and environment in effect."""
    variables = {**instruction.envs, **instruction.args}
    return _VARIABLE.sub(lambda m: variables.get(m.group(1) or m.group(2), m.group(0)), text)


def uv_syncs(stage: Stage) -> list[tuple[Run, list[str]]]:
    """Each RUN's `uv sync` command, its words expanded."""
    found = []
    for instruction in stage.all("RUN"):
        run = parse_run(instruction)
        for command in run.command.split("&&"):
            words = [expand(w, instruction) for w in shlex.split(command)]
            if words[:2] == ["uv", "sync"]:
                found.append((run, words))
    return found


def venv_of(build: Stage) -> str:
    setting = build.last("ENV")
    assert setting is not None, "the build stage sets uv's environment"
    return setting.envs["UV_PROJECT_ENVIRONMENT"]


def test_one_dockerfile_builds_every_component() -> None:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    dockerfiles = {p for p in listed if p.rpartition("/")[2] == "Dockerfile" if (ROOT / p).exists()}
    assert dockerfiles == {DOCKERFILE.name}
    artifacts = skaffold_artifacts()
    assert sorted(artifacts) == COMPONENTS, "one image per component, named like it"
    for image, artifact in artifacts.items():
        assert artifact.get("context", ".") == ".", f"{image}: built from the repository root"
        docker = artifact["docker"]
        assert docker.get("dockerfile", "Dockerfile") == DOCKERFILE.name
        assert docker["buildArgs"] == {COMPONENT_ARG: image}
        assert "target" not in docker, "the build argument alone picks the component"


def test_components_are_named_once() -> None:
    for name, member in components().items():
        assert member.path == f"services/{name}"
        assert member.dist == f"switchyard-{name}"


@pytest.mark.parametrize("component", COMPONENTS)
def test_multi_stage_on_one_pinned_python(component: str) -> None:
    build, *_, runtime = all_stages = stages(component)
    assert len(all_stages) >= 2, "a build stage and a runtime stage"
    assert PYTHON_BASE.match(runtime.base), f"runtime base {runtime.base!r}: python:3.11.N-slim"
    # The virtualenv's interpreter is a link to the build stage's Python: same image.
    assert build.base == runtime.base
    assert not uv_syncs(runtime), "no dependency installation in the final image"
    copies = [parse_copy(c) for c in runtime.all("COPY")]
    assert [(c.flags.get("from"), c.sources, c.dest) for c in copies] == [
        (build.alias, (venv_of(build),), venv_of(build))
    ], "the final image gets the virtualenv alone"


@pytest.mark.parametrize("component", COMPONENTS)
def test_uv_pinned_like_the_makefile(component: str) -> None:
    build = stages(component)[0]
    uv_copies = [
        c for c in map(parse_copy, build.all("COPY")) if "astral-sh/uv" in c.flags.get("from", "")
    ]
    assert [c.flags["from"] for c in uv_copies] == [f"ghcr.io/astral-sh/uv:{uv_version()}"]


@pytest.mark.parametrize("component", COMPONENTS)
def test_dependencies_from_the_lock_before_the_sources(component: str) -> None:
    build = stages(component)[0]
    (deps_run, deps), (sources_run, sources) = uv_syncs(build)
    package = f"switchyard-{component}"
    for sync in (deps, sources):
        assert "--no-dev" in sync
        assert sync[sync.index("--package") + 1] == package

    # First the third-party dependencies, from the lock and the root pyproject.toml alone,
    # so that their layer outlives source edits; nothing of the sources is in the stage yet.
    assert {"--frozen", "--no-install-workspace"} <= set(deps)
    assert {m.get("source") for m in deps_run.binds()} == {"uv.lock", "pyproject.toml"}
    local_copies = [parse_copy(c) for c in build.all("COPY") if "from" not in parse_copy(c).flags]
    assert all(c.line > deps_run.line for c in local_copies)

    # Then the workspace's packages, as wheels, from the whole context (COPY: skaffold
    # watches what COPY names); the lock is checked against every member.
    assert {"--locked", "--no-editable"} <= set(sources)
    assert [(c.sources, c.line < sources_run.line) for c in local_copies] == [((".",), True)]


@pytest.mark.parametrize("component", COMPONENTS)
def test_runs_as_non_root_with_exec_form_entrypoint(component: str) -> None:
    build, *_, runtime = stages(component)
    user = runtime.last("USER")
    assert user is not None, "the final stage sets USER"
    uid, _, gid = user.value.partition(":")
    # Numeric, so the kubelet can check runAsNonRoot without reading /etc/passwd.
    assert uid.isdigit(), "a numeric uid"
    assert int(uid) > 0, "not root"
    assert gid == "" or int(gid) > 0
    last = runtime.instructions[-1]
    assert last.envs.get("PYTHONUNBUFFERED") == "1"
    assert last.envs["PATH"].startswith(f"{venv_of(build)}/bin:")
    stop = runtime.last("STOPSIGNAL")
    assert stop is not None
    assert stop.value == "SIGTERM"

    entrypoint = runtime.last("ENTRYPOINT")
    assert entrypoint is not None
    # Exec form: the component's Python is PID 1 and gets SIGTERM (no shell in between).
    assert exec_form(entrypoint) == [f"{venv_of(build)}/bin/switchyard"]
    assert runtime.last("CMD") is None
    # The build links that name to the component's own command (test_images runs it).
    linked = [
        expand(run.command, i)
        for i in build.all("RUN")
        for run in [parse_run(i)]
        if "ln -s" in run.command
    ]
    assert len(linked) == 1
    assert f'ln -s "switchyard-{component}" "{venv_of(build)}/bin/switchyard"' in linked[0]


@pytest.mark.parametrize("component", COMPONENTS)
def test_the_component_has_its_command(component: str) -> None:
    pyproject = tomllib.loads((ROOT / components()[component].path / "pyproject.toml").read_text())
    assert f"switchyard-{component}" in pyproject["project"]["scripts"]


@pytest.mark.parametrize("component", COMPONENTS)
def test_labels_name_the_component(component: str) -> None:
    runtime = stages(component)[-1]
    labels = runtime.instructions[-1].labels
    assert labels["org.opencontainers.image.title"] == f"switchyard-{component}"
    assert component in labels["org.opencontainers.image.description"]


def test_dockerignore_keeps_the_context_small() -> None:
    for path in (".git", ".venv", ".venv-chart", "tests", "bench", "charts", ".mypy_cache"):
        assert ignored(path), path
    for path in ("services/edge/src/switchyard/__pycache__/x.pyc", "services/edge/.venv"):
        assert ignored(path), path
    for path in ("uv.lock", "pyproject.toml", "libs/servicekit/src/switchyard/servicekit/logs.py"):
        assert not ignored(path), path
