"""Routes from a YAML file (the local source), reloaded when the file changes.

```yaml
models:
  - name: demo-vllm          # the served model name the adapters know
    engine: vllm             # an engine of switchyard.engines (vllm, sglang, tgi)
    aliases: [llama]         # other names clients may send
    endpoints: ["127.0.0.1:50061"]
    routing:                 # optional
      policy: prefix         # load (default), prefix or session: see `routing.affinity`
```
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import structlog
import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from switchyard.edge.routing.table import Policy, Route, RouteTable
from switchyard.engines import engine_kind

log = structlog.get_logger(__name__)

ModelName = Annotated[
    str, Field(min_length=1, max_length=256, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$")
]
Address = Annotated[str, Field(pattern=r"^[A-Za-z0-9._\[\]:-]+:\d{1,5}$")]


def _known_engine(name: str) -> str:
    engine_kind(name)  # ValueError naming the engines the registry knows
    return name


class _Routing(BaseModel):
    model_config = ConfigDict(extra="forbid")
    policy: Policy = "load"


class _RouteEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: ModelName
    engine: Annotated[str, AfterValidator(_known_engine)]
    aliases: list[ModelName] = []
    endpoints: Annotated[list[Address], Field(min_length=1)]
    routing: _Routing = _Routing()


class _RoutesFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    models: list[_RouteEntry]


class RoutesFileError(ValueError):
    pass


def load_routes(path: Path) -> RouteTable:
    try:
        raw = yaml.safe_load(path.read_text())
        parsed = _RoutesFile.model_validate(raw)
        return RouteTable(
            Route(
                e.name,
                e.engine,
                tuple(dict.fromkeys(e.endpoints)),
                tuple(e.aliases),
                policy=e.routing.policy,
            )
            for e in parsed.models
        )
    except (OSError, yaml.YAMLError) as exc:
        raise RoutesFileError(f"{path}: {exc}") from None
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise RoutesFileError(f"{path}: {problems}") from None
    except ValueError as exc:
        raise RoutesFileError(f"{path}: {exc}") from None


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class FileRoutes:
    """Loads the file at start (an error is fatal) and then on every change (an error keeps the old table)."""

    def __init__(self, path: Path, on_change: Callable[[RouteTable], None]) -> None:
        self.path = path
        self._on_change = on_change
        self._stamp = _stamp(path)
        self.table = load_routes(path)
        on_change(self.table)

    async def watch(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            stamp = await asyncio.to_thread(_stamp, self.path)
            if stamp == self._stamp:
                continue
            self._stamp = stamp
            try:
                table = await asyncio.to_thread(load_routes, self.path)
            except RoutesFileError as exc:
                log.error("routes_reload_failed", error=str(exc))
                continue
            if table != self.table:
                self.table = table
                log.info("routes_reloaded", models=[r.name for r in table.routes])
                self._on_change(table)
