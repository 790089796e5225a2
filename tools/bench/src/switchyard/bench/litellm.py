"""LiteLLM's proxy, the peer: its own virtualenv (made once), a generated config, its command.

The proxy is set up as its production guide advises, minus what would put it at a
disadvantage that Switchyard does not share: no database, no spend or error logs, no
callbacks, no verbose logging (`LITELLM_LOG=ERROR`), the local model cost map (no fetch
at start-up), one uvicorn worker (its default).
"""

from __future__ import annotations

import asyncio
import shutil
import sys
from collections.abc import Collection, Mapping
from pathlib import Path

import yaml

#: The version measured (the newest whose dependencies all resolve on this machine's index).
VERSION = "1.106.2"
MASTER_KEY = "sk-switchyard-bench"


def _python(venv: Path) -> Path:
    return venv / "bin" / "python"


async def _run(argv: list[str], log: Path) -> int:
    with log.open("ab") as out:
        process = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=asyncio.subprocess.STDOUT
        )
        return await process.wait()


async def installed_version(venv: Path) -> str | None:
    if not (venv / "bin" / "litellm").exists():
        return None
    process = await asyncio.create_subprocess_exec(
        str(_python(venv)),
        "-c",
        "import importlib.metadata as m; print(m.version('litellm'))",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    out, _ = await process.communicate()
    version = out.decode().strip()
    return version if process.returncode == 0 and version else None


async def ensure_venv(venv: Path, version: str, log: Path) -> None:
    """`litellm[proxy]==version` in `venv`, created with `python3 -m venv` if needed.
    Raises RuntimeError, naming the log, when it cannot be installed."""
    if await installed_version(venv) == version:
        return
    if not _python(venv).exists():
        python = shutil.which("python3") or sys.executable
        if await _run([python, "-m", "venv", str(venv)], log) != 0:
            raise RuntimeError(f"could not create {venv} (see {log})")
    pip = [str(_python(venv)), "-m", "pip", "install", "--disable-pip-version-check"]
    if await _run([*pip, f"litellm[proxy]=={version}"], log) != 0:
        raise RuntimeError(f"could not install litellm[proxy]=={version} (see {log})")


def write_config(path: Path, models: Mapping[str, str], embeddings: Collection[str] = ()) -> None:
    """A config serving each model name from the OpenAI-compatible server at its URL (the
    `embeddings` ones marked as embedding models, as LiteLLM's docs have them)."""
    config = {
        "model_list": [_model(name, url, name in embeddings) for name, url in models.items()],
        "litellm_settings": {
            "set_verbose": False,
            "json_logs": False,
            "callbacks": [],
            "success_callback": [],
            "failure_callback": [],
            "turn_off_message_logging": True,
            "request_timeout": 600,
        },
        "general_settings": {
            "master_key": MASTER_KEY,
            "disable_spend_logs": True,
            "disable_error_logs": True,
        },
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def _model(name: str, url: str, embedding: bool) -> dict[str, object]:
    entry: dict[str, object] = {
        "model_name": name,
        # `hosted_vllm/` serves chat, completions and embeddings from vLLM's own routes.
        "litellm_params": {
            "model": f"hosted_vllm/{name}",
            "api_base": f"{url}/v1",
            "api_key": "unused",
        },
    }
    if embedding:
        entry["model_info"] = {"mode": "embedding"}  # what its health checks call
    return entry


def argv(venv: Path, config: Path, port: int) -> list[str]:
    return [
        str(venv / "bin" / "litellm"),
        "--config", str(config),
        "--host", "127.0.0.1",
        "--port", str(port),
        "--num_workers", "1",
    ]  # fmt: skip


def env() -> dict[str, str]:
    return {
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_LOG": "ERROR",
        "LITELLM_MASTER_KEY": MASTER_KEY,
        "DISABLE_SCHEMA_UPDATE": "True",
    }
