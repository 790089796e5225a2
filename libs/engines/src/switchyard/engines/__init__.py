"""The engine registry: one entry per engine Switchyard serves (see `registry.py`)."""

from switchyard.engines.kind import EngineKind, Probes, Serving
from switchyard.engines.registry import ENGINES, NAMES, engine_kind

__all__ = ["ENGINES", "NAMES", "EngineKind", "Probes", "Serving", "engine_kind"]
