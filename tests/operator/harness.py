"""Run the operator in-process against the emulator, with a fake load source and clock.

The operator runs as it does in production (`runtime.run`: kopf with our registry and
settings), in its own thread and event loop, and reaches the emulator over HTTP. Only its
dependencies differ: a login for the emulator's URL, a load source the test sets, a clock
the test moves.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import kopf
import yaml
from lightkube import AsyncClient, KubeConfig

from switchyard.operator import naming
from switchyard.operator.handlers import register
from switchyard.operator.kube import Kube
from switchyard.operator.load import BackendRef, GrpcLoadSource
from switchyard.operator.reconcile import ApiEvents, Deps
from switchyard.operator.runtime import kopf_settings, run
from switchyard.operator.scaling import Load
from switchyard.operator.settings import OperatorSettings
from tests.support import polling

T = TypeVar("T")

#: Where the tests' ModelBackends live (the operator watches only this namespace).
NAMESPACE = "models"

#: Every replica answered (the fake does not know how many there are).
ALL = 1_000_000


@dataclass
class FakeLoad:
    """Requests in flight per backend, as the adapters would report them."""

    loads: dict[tuple[str, str], Load] = field(default_factory=dict)
    #: Reads per backend: the scaler reads a backend's load first thing in each pass.
    reads: Counter[tuple[str, str]] = field(default_factory=Counter)

    def set(self, namespace: str, name: str, in_flight: int, reporting: int = ALL) -> None:
        self.loads[(namespace, name)] = Load(in_flight=in_flight, reporting=reporting)

    async def read(self, backend: BackendRef) -> Load:
        self.reads[(backend.namespace, backend.name)] += 1
        return self.loads.get((backend.namespace, backend.name), Load(0, ALL))

    async def passes(self, name: str, count: int = 1, namespace: str = NAMESPACE) -> None:
        """Wait until `count` scaling passes of a backend ran from start to end after this
        call, so they saw its load and the clock as they are now, however slow the machine.
        Passes run one after another: the one that reads next has started after this call,
        and it has ended when the following one reads."""
        seen = self.reads[(namespace, name)]
        await eventually(
            lambda: self.reads[(namespace, name)] >= seen + count + 1,
            what=f"{count} scaling passes of {namespace}/{name}",
        )


@dataclass
class FakeClock:
    now: float = field(default_factory=time.time)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def kubeconfig(url: str, namespace: str = "default") -> dict[str, Any]:
    """A kubeconfig for the emulator (it checks no credentials; clients insist on some)."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "emulator", "cluster": {"server": url}}],
        "users": [{"name": "test", "user": {"token": "test"}}],
        "contexts": [
            {
                "name": "emulator",
                "context": {"cluster": "emulator", "user": "test", "namespace": namespace},
            }
        ],
        "current-context": "emulator",
    }


def operator_settings(namespace: str, **overrides: Any) -> OperatorSettings:
    values: dict[str, Any] = {
        "namespaces": [namespace],
        "scale_interval_s": 0.05,
        "retry_delay_s": 0.2,
        "liveness_port": 0,
        "image_tag": "test",
        **overrides,
    }
    return OperatorSettings.model_validate(values)


class OperatorThread:
    """The operator, started and stopped by a test (stoppable at any point, restartable)."""

    def __init__(
        self,
        url: str,
        settings: OperatorSettings,
        load: FakeLoad | None,
        clock: FakeClock,
        *,
        watch_timeout_s: float | None = None,
    ) -> None:
        """`load` None: the real gRPC load source (it lists pods and asks their adapters)."""
        self.url = url
        self.settings = settings
        self.load = load
        self.clock = clock
        self.watch_timeout_s = watch_timeout_s
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="operator", daemon=True)

    async def start(self) -> None:
        self._thread.start()
        if not await asyncio.to_thread(self._ready.wait, polling.TIMEOUT_S):
            raise AssertionError(f"the operator did not start: {self._error!r}")

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.to_thread(self._thread.join, polling.TIMEOUT_S)
        if self._thread.is_alive():
            raise AssertionError("the operator did not stop")
        if self._error is not None:
            raise self._error

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as error:  # reported by stop()
            self._error = error

    async def _serve(self) -> None:
        url = self.url
        config = KubeConfig.from_dict(kubeconfig(url))
        async with AsyncClient(config=config, field_manager=naming.FIELD_MANAGER) as client:
            kube = Kube(client)
            deps = Deps(
                settings=self.settings,
                kube=kube,
                load=self.load or GrpcLoadSource(client, timeout_s=1.0, concurrency=4),
                clock=self.clock,
                events=ApiEvents(kube),
            )
            registry = kopf.OperatorRegistry()
            register(registry, deps)

            @kopf.on.login(registry=registry)
            def login(**_: Any) -> kopf.ConnectionInfo:
                return kopf.ConnectionInfo(server=url, insecure=True)

            ks = kopf_settings(self.settings)
            ks.watching.connect_timeout = 2
            ks.watching.client_timeout = self.watch_timeout_s
            ks.watching.server_timeout = self.watch_timeout_s
            ks.queueing.exit_timeout = 0.5
            ks.process.ultimate_exiting_timeout = 5
            ks.posting.default_backoffs = 0.1
            await run(
                self.settings,
                registry,
                kopf_config=ks,
                stop_flag=self._stop,
                ready_flag=self._ready,
            )


async def eventually(
    check: Callable[[], T | None] | Callable[[], Awaitable[T | None]],
    *,
    what: str = "condition",
) -> T:
    """`tests.support.polling.eventually`, with AssertionErrors from `check` taken as "not
    yet" (operator checks assert on objects that may not be there yet)."""
    result: T = await polling.eventually(check, what=what, ignore=(AssertionError,))
    return result


EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "services" / "operator" / "examples"
EXAMPLES = (
    "vllm-gpu", "sglang-gpu", "tgi-gpu", "embed-gpu",
    "vllm-sim", "sglang-sim", "tgi-sim", "embed-sim",
)  # fmt: skip


def example(name: str) -> dict[str, Any]:
    """An example ModelBackend, as a user would `kubectl apply` it."""
    loaded: dict[str, Any] = yaml.safe_load((EXAMPLES_DIR / f"{name}.yaml").read_text())
    return loaded


def backend(name: str, spec: dict[str, Any], **metadata: Any) -> dict[str, Any]:
    return {
        "apiVersion": "switchyard.dev/v1alpha1",
        "kind": "ModelBackend",
        "metadata": {"name": name, **metadata},
        "spec": spec,
    }
