"""The engine registry: one entry per engine Switchyard serves (see `registry.py`)."""

from switchyard.engines.kind import (
    CHAT_OPTIONS,
    GENERATION_ONLY,
    SIM_EMBEDDING_DIMENSIONS_FLAG,
    SIM_MULTIMODAL_FLAG,
    EngineKind,
    Probes,
    Serving,
)
from switchyard.engines.registry import ENGINES, NAMES, engine_kind

__all__ = [
    "CHAT_OPTIONS",
    "ENGINES",
    "GENERATION_ONLY",
    "NAMES",
    "SIM_EMBEDDING_DIMENSIONS_FLAG",
    "SIM_MULTIMODAL_FLAG",
    "EngineKind",
    "Probes",
    "Serving",
    "engine_kind",
]
