"""The engines' own request models, imported from their release wheels (never installed).

`make engine-wheels` fetches the wheels once into `.cache/engine-wheels/` (or the folder
that SWITCHYARD_ENGINE_WHEELS names). A test that needs one and does not find it fails
with that instruction: it never skips, so a missing wheel cannot pass a run unnoticed.

A module is imported straight from the wheel's zip under its real name, without its
parent packages: `sglang/__init__.py` would import torch and the whole server. Only
modules whose own imports are light (msgspec, pydantic, the `openai` types) can be
loaded this way; vLLM's request models import torch and are out of reach.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import zipimport
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any, Final, Literal

import pytest
from pydantic import BaseModel

from tests.support.workspace import ROOT

WHEELS: Final = Path(
    os.environ.get("SWITCHYARD_ENGINE_WHEELS") or ROOT / ".cache" / "engine-wheels"
)
SGLANG_VERSION: Final = "0.5.23"


def wheel(project: str, version: str) -> Path:
    """The release wheel of `project` `version` in WHEELS; the calling test fails without it."""
    found = sorted(WHEELS.glob(f"{project}-{version}-*.whl"))
    if not found:
        pytest.fail(
            f"the {project} {version} release wheel is not in {WHEELS}: run `make engine-wheels` "
            "(it downloads it once; `make test` does it first)",
            pytrace=False,
        )
    return found[0]


def import_from_wheel(path: Path, name: str) -> ModuleType:
    """Module `name` (e.g. "sglang.api.v1.api_types") executed from the wheel at `path`, its
    parent packages left unimported. Registered in sys.modules under `name`: pydantic and
    the module's own `from __future__ import annotations` resolve names through it."""
    if name in sys.modules:
        return sys.modules[name]
    package = name.rpartition(".")[0]
    loader = zipimport.zipimporter(f"{path}/{package.replace('.', '/')}/")
    spec = importlib.util.spec_from_loader(name, loader)
    assert spec is not None, f"{name} is not in {path}"
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


@contextmanager
def _stand_ins(*modules: ModuleType) -> Iterator[None]:
    """`modules` importable under their names while the block runs, and not after."""
    assert not any(m.__name__ in sys.modules for m in modules), "a real module is loaded"
    sys.modules.update((m.__name__, m) for m in modules)
    try:
        yield
    finally:
        for module in modules:
            del sys.modules[module.__name__]


def _convert_json_schema_to_str(schema: Any) -> str:
    """What `sglang.utils.convert_json_schema_to_str` does with the dicts and strings the
    OpenAI layer passes it (a pydantic class, the third case, never reaches it here)."""
    return schema if isinstance(schema, str) else json.dumps(schema)


class StructuralTag(BaseModel):
    """The shape of `xgrammar.StructuralTag` (SGLang 0.5.23 pins xgrammar 0.2.7): a
    `{"type": "structural_tag", "format": {...}}` response format, the format's own union
    left unchecked. Without xgrammar, protocol.py falls back to `StructuralTag = Any`, and
    its `response_format` union would then admit anything."""

    type: Literal["structural_tag"] = "structural_tag"
    format: dict[str, Any]


@dataclass(frozen=True)
class SglangModels:
    #: `sglang/api/v1/api_types.py`: the JSON contract `/generate` enforces.
    api_types: ModuleType
    #: `sglang/srt/entrypoints/openai/protocol.py`: the OpenAI routes' pydantic models.
    protocol: ModuleType


@cache
def sglang_models() -> SglangModels:
    """SGLang's request models. While `protocol.py` is imported, two stand-ins serve (it keeps
    what it took from them): `sglang.utils` with the one function it takes from there (the
    real module imports IPython, numpy, requests and the server's settings), and `xgrammar`
    with its `StructuralTag` model (the real package is a compiled grammar engine)."""
    path = wheel("sglang", SGLANG_VERSION)
    api_types = import_from_wheel(path, "sglang.api.v1.api_types")
    utils = ModuleType("sglang.utils")
    utils.convert_json_schema_to_str = _convert_json_schema_to_str  # type: ignore[attr-defined]
    xgrammar = ModuleType("xgrammar")
    xgrammar.StructuralTag = StructuralTag  # type: ignore[attr-defined]
    with _stand_ins(utils, xgrammar):
        protocol = import_from_wheel(path, "sglang.srt.entrypoints.openai.protocol")
    return SglangModels(api_types=api_types, protocol=protocol)
