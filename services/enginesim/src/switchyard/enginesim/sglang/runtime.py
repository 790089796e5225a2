"""Everything a route needs: the server's arguments, its engine and its health."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from switchyard.enginesim.scheduler import Scheduler
from switchyard.enginesim.sglang.args import ServerArgs
from switchyard.enginesim.sglang.engine import SglangEngine
from switchyard.enginesim.sglang.limits import ContextLimits
from switchyard.enginesim.sglang.metrics import SglangMetrics
from switchyard.enginesim.stats import SimStats


@dataclass
class Runtime:
    args: ServerArgs
    scheduler: Scheduler
    engine: SglangEngine
    stats: SimStats
    limits: ContextLimits
    metrics: SglangMetrics | None = None
    started_at: float = field(default_factory=time.time)

    @property
    def up(self) -> bool:
        """SGLang's ServerStatus.Up: the model is loaded and warmed up (else Starting)."""
        return self.scheduler.is_loaded()
