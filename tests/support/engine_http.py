"""An in-memory `EngineHTTP` for translation tests: canned JSON answers, recorded calls."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class RecordingEngine:
    def __init__(self, answers: Mapping[tuple[str, str], Any] | None = None) -> None:
        self.answers = dict(answers or {})
        self.calls: list[tuple[str, str, Any]] = []

    async def get_json(self, path: str) -> Any:
        self.calls.append(("GET", path, None))
        return self.answers.get(("GET", path))

    async def post_json(self, path: str, body: Any) -> Any:
        self.calls.append(("POST", path, body))
        return self.answers.get(("POST", path))
