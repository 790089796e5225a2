"""A real `redis-server` for tests, on a free loopback port or a unix socket.

Persistence is off (no RDB, no AOF), so a restart starts empty, like a Redis that lost
its data and its script cache. The server can be stopped, paused (SIGSTOP, to make
clients time out) and started again on the same address:

    with running_redis(tmp_path) as server:
        client = redis.asyncio.from_url(server.url)
        server.stop()
        server.start()
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import redis

from tests.support.polling import NotYet, eventually_sync
from tests.support.processes import Service, free_port


class RedisServer:
    """One redis-server address; `start` and `stop` may be called again and again."""

    def __init__(
        self,
        log_dir: Path,
        *,
        unix_socket: bool = False,
        args: Sequence[str] = (),
        name: str = "redis",
        password: str | None = None,
    ) -> None:
        """`args`: more redis-server options (a cluster node's, a replica's); `name`
        names the log (`<name>.log` in `log_dir`, also the server's `--dir`);
        `password`: `requirepass` (and `masterauth`, for a replica)."""
        executable = shutil.which("redis-server")
        if executable is None:
            raise RuntimeError(
                "redis-server is not installed (Debian: apt-get install redis-server)"
            )
        self._executable = executable
        self._log_dir = log_dir
        self._args = list(args)
        self.name = name
        self.password = password
        self._socket_dir: Path | None = None
        self.port = 0
        self.socket: Path | None = None
        if unix_socket:
            # Not under log_dir: a unix socket path must stay under ~100 bytes.
            self._socket_dir = Path(tempfile.mkdtemp(prefix="redis-"))
            self.socket = self._socket_dir / "redis.sock"
        else:
            self.port = free_port()
        self.service: Service | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        if self.socket is not None:
            return f"unix://{auth}{self.socket}"
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 30.0) -> None:
        """Start the server (again) on its address and wait until it answers PING."""
        if self.service is not None and self.service.alive():
            return
        args = [
            self._executable,
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self._log_dir),
            "--daemonize", "no",
            "--loglevel", "warning",
        ]  # fmt: skip
        if self.password:
            args += ["--requirepass", self.password, "--masterauth", self.password]
        args += self._args
        if self.socket is not None:
            args += ["--port", "0", "--unixsocket", str(self.socket), "--unixsocketperm", "700"]
        else:
            args += ["--bind", "127.0.0.1", "--port", str(self.port)]
        log_path = self._log_dir / f"{self.name}.log"
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.service = Service(self.name, process, log_path, self.port)
        self._wait_ready(self.service, timeout)

    def stop(self) -> None:
        if self.service is not None:
            self.resume()  # a stopped process cannot act on SIGTERM
            self.service.stop()

    def pause(self) -> None:
        """Freeze the server: connections stay open but nothing answers (timeouts)."""
        if self.service is not None:
            self.service.signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.service is not None:
            self.service.signal(signal.SIGCONT)

    def close(self) -> None:
        self.stop()
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)

    def _wait_ready(self, service: Service, timeout: float) -> None:
        client = redis.Redis.from_url(self.url, socket_timeout=0.5, socket_connect_timeout=0.5)

        def pong() -> bool:
            if not service.alive():
                raise service.fail("exited while starting")
            return bool(client.ping())

        try:
            eventually_sync(
                pong, within_s=timeout, interval=0.01, what="PONG", ignore=(redis.RedisError,)
            )
        except NotYet as exc:
            raise service.fail(str(exc)) from None
        finally:
            client.close()


@contextlib.contextmanager
def running_redis(log_dir: Path, *, unix_socket: bool = False) -> Iterator[RedisServer]:
    """A started server, stopped (and its socket directory removed) on exit."""
    server = RedisServer(log_dir, unix_socket=unix_socket)
    try:
        server.start()
        yield server
    finally:
        server.close()
