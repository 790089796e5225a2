"""Every image's Dockerfile: multi-stage, built from the workspace lock, small, non-root,
exec-form entrypoint. Checked by reading them (no image builder here), and by replaying each
build stage's uv steps into a scratch virtualenv, which must then import every module."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.dockerfiles import (
    Copy,
    Stage,
    exec_form,
    ignored,
    parse_copy,
    run_commands,
    stages,
)
from tests.support.workspace import (
    ROOT,
    Member,
    lock_packages,
    members,
    skaffold_artifacts,
    uv_version,
    workspace_closure,
)

#: One name per component: folder, image and skaffold artifact.
IMAGES = {
    "edge": "services/edge",
    "adapter-vllm": "services/adapter-vllm",
    "adapter-sglang": "services/adapter-sglang",
    "adapter-tgi": "services/adapter-tgi",
    "enginesim": "services/enginesim",
    "operator": "services/operator",
}
PYTHON_BASE = re.compile(r"^python:3\.11\.\d+-slim(-[a-z]+)?$")


def dockerfile(image: str) -> Path:
    return ROOT / IMAGES[image] / "Dockerfile"


def member(image: str) -> Member:
    (found,) = [m for m in members() if m.path == IMAGES[image]]
    return found


def uv_syncs(stage: Stage) -> list[list[str]]:
    return [
        command
        for run in stage.all("RUN")
        for command in run_commands(run)
        if command[:2] == ["uv", "sync"]
    ]


def local_copies(stage: Stage) -> list[Copy]:
    return [c for c in map(parse_copy, stage.all("COPY")) if "from" not in c.flags]


def test_every_dockerfile_is_a_skaffold_artifact_and_back() -> None:
    found = {
        str(p.parent.relative_to(ROOT))
        for pattern in ("services/*/Dockerfile", "tools/*/Dockerfile")
        for p in ROOT.glob(pattern)
    }
    assert found == set(IMAGES.values())
    artifacts = skaffold_artifacts()
    assert set(artifacts) == set(IMAGES)
    for image, artifact in artifacts.items():
        assert artifact.get("context", ".") == ".", f"{image}: build from the repository root"
        assert artifact["docker"]["dockerfile"] == f"{IMAGES[image]}/Dockerfile"


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_multi_stage_on_one_pinned_python(image: str) -> None:
    build, *_, runtime = all_stages = stages(dockerfile(image))
    assert len(all_stages) >= 2, "a build stage and a runtime stage"
    assert PYTHON_BASE.match(runtime.base), f"runtime base {runtime.base!r}: python:3.11.N-slim"
    # The virtualenv's interpreter is a link to the build stage's Python: same image.
    assert build.base == runtime.base
    assert not uv_syncs(runtime), "no dependency installation in the final image"
    venv_copies = [c for c in map(parse_copy, runtime.all("COPY")) if c.flags.get("from")]
    assert [c.flags["from"] for c in venv_copies] == [build.alias], "only the venv from build"


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_uv_pinned_like_the_makefile(image: str) -> None:
    build = stages(dockerfile(image))[0]
    uv_copies = [
        c for c in map(parse_copy, build.all("COPY")) if "astral-sh/uv" in c.flags.get("from", "")
    ]
    assert [c.flags["from"] for c in uv_copies] == [f"ghcr.io/astral-sh/uv:{uv_version()}"]


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_installs_from_the_lock_dependencies_first(image: str) -> None:
    build = stages(dockerfile(image))[0]
    syncs = uv_syncs(build)
    assert len(syncs) == 2, "dependencies alone, then the project"
    for sync in syncs:
        for flag in ("--locked", "--no-dev", "--no-editable"):
            assert flag in sync, f"{' '.join(sync)}: {flag}"
        assert sync[sync.index("--package") + 1] == member(image).dist
    assert "--no-install-workspace" in syncs[0]
    assert member(image).dist in lock_packages()

    # Before the first sync: the lock, the root pyproject and every member's pyproject (uv
    # needs the whole workspace to check the lock), and no sources (they'd bust the cache).
    first_sync_line = next(
        run.line
        for run in build.all("RUN")
        if any(c[:2] == ["uv", "sync"] for c in run_commands(run))
    )
    early = [c for c in local_copies(build) if c.line < first_sync_line]
    early_sources = {s for c in early for s in c.sources}
    assert {"pyproject.toml", "uv.lock"} <= early_sources
    assert {f"{m.path}/pyproject.toml" for m in members()} <= early_sources
    assert not any(s.endswith("/src") for s in early_sources)


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_copies_exactly_what_the_package_needs(image: str) -> None:
    build = stages(dockerfile(image))[0]
    copies = local_copies(build)
    for copy in copies:
        for source in copy.sources:
            assert (ROOT / source).exists(), f"line {copy.line}: {source} does not exist"
            assert not ignored(source), f"line {copy.line}: .dockerignore leaves out {source}"
    sources = {s for c in copies for s in c.sources if s.endswith("/src")}
    needed = {m.path for m in members() if m.dist in workspace_closure(member(image).dist)}
    assert sources == {f"{path}/src" for path in needed}


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_runs_as_non_root_with_exec_form_entrypoint(image: str) -> None:
    runtime = stages(dockerfile(image))[-1]
    user = runtime.last("USER")
    assert user is not None, "the final stage sets USER"
    uid, _, gid = user.value.partition(":")
    # Numeric, so the kubelet can check runAsNonRoot without reading /etc/passwd.
    assert uid.isdigit(), "a numeric uid"
    assert int(uid) > 0, "not root"
    assert gid == "" or int(gid) > 0
    assert any("PYTHONUNBUFFERED=1" in env.value for env in runtime.all("ENV"))

    entrypoint = runtime.last("ENTRYPOINT")
    assert entrypoint is not None
    argv = exec_form(entrypoint)
    assert argv is not None, "exec form: Python is PID 1 and gets SIGTERM"
    cmd = runtime.last("CMD")
    default_args = exec_form(cmd) if cmd is not None else []
    assert default_args is not None, "CMD in exec form too"
    assert argv[:2] == ["python", "-m"]
    # `python -m MODULE`, or `python -m` with the module as the first argument (enginesim).
    module = argv[2] if len(argv) > 2 else default_args[0]
    main = ROOT / IMAGES[image] / "src" / Path(*module.split(".")) / "__main__.py"
    assert main.is_file(), f"{module} is not runnable with python -m"


def test_dockerignore_keeps_the_context_small() -> None:
    for path in (".git", ".venv", ".venv-chart", "tests", "bench", "charts", ".mypy_cache"):
        assert ignored(path), path
    for path in ("services/edge/src/switchyard/__pycache__/x.pyc", "services/edge/.venv"):
        assert ignored(path), path
    for path in ("uv.lock", "pyproject.toml", "libs/servicekit/src/switchyard/servicekit/logs.py"):
        assert not ignored(path), path


@pytest.mark.slow
@pytest.mark.parametrize("image", sorted(IMAGES))
def test_build_stage_makes_a_virtualenv_that_imports(image: str, tmp_path: Path) -> None:
    """Replay the build stage's COPY and `uv sync` steps into a scratch folder: the resulting
    virtualenv (what the image ships) must import every module of the packages it runs."""
    build = stages(dockerfile(image))[0]
    context = tmp_path / "src"
    context.mkdir()
    venv = tmp_path / "venv"
    env = {
        **os.environ,
        "UV_PROJECT_ENVIRONMENT": str(venv),
        "UV_PYTHON_DOWNLOADS": "never",
        "UV_PYTHON": sys.executable,
        "UV_NO_PROGRESS": "1",
    }
    env.pop("VIRTUAL_ENV", None)
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    assert uv, "uv not found"
    for instruction in build.instructions:
        if instruction.name == "COPY":
            copy = parse_copy(instruction)
            if "from" in copy.flags:
                continue
            for source in copy.sources:
                target = context / (copy.dest.rstrip("/") if copy.dest != "./" else "")
                if (ROOT / source).is_dir():
                    shutil.copytree(ROOT / source, context / copy.dest, dirs_exist_ok=True)
                else:
                    target.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(ROOT / source, target / Path(source).name)
        elif instruction.name == "RUN":
            for command in run_commands(instruction):
                if command[:2] == ["uv", "sync"]:
                    subprocess.run(
                        [uv, *command[1:], "--quiet"], cwd=context, env=env, check=True, timeout=300
                    )
    packages = sorted(
        {
            f"switchyard.{p.name}"
            for m in members()
            if m.dist in workspace_closure(member(image).dist)
            for p in (ROOT / m.path / "src" / "switchyard").iterdir()
            if p.is_dir() and (p / "__init__.py").is_file()
        }
    )
    probe = (
        "import importlib, pkgutil, sys\n"
        "failed = []\n"
        "for name in sys.argv[1:]:\n"
        "    package = importlib.import_module(name)\n"
        "    for info in pkgutil.walk_packages(package.__path__, name + '.'):\n"
        "        if info.name.rsplit('.', 1)[-1] == '__main__':\n"
        "            continue\n"
        "        try:\n"
        "            importlib.import_module(info.name)\n"
        "        except Exception as exc:\n"
        "            failed.append(f'{info.name}: {exc!r}')\n"
        "print('\\n'.join(failed))\n"
        "sys.exit(1 if failed else 0)\n"
    )
    result = subprocess.run(
        [str(venv / "bin" / "python"), "-c", probe, *packages],
        cwd=tmp_path,  # not the repository: only what the virtualenv holds
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")},
    )
    assert result.returncode == 0, (
        f"the {image} image's virtualenv cannot import:\n{result.stdout}{result.stderr}"
    )
