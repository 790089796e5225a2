"""The keys in a Kubernetes Secret, through the API server (`auth.secret.SecretKeys`): the
keys admin API on two replicas sharing one Secret on an emulated API server that behaves as
a real one for it (tests/edge/auth/apiserver.py: resourceVersion conflicts, field selectors,
watch expiry and 410 Gone)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import kmock
import pytest
from pydantic import ValidationError
from redis.asyncio import Redis
from structlog.testing import capture_logs

from switchyard.edge.admin.keys import REPLICAS_HEADER
from switchyard.edge.auth import hash_key
from switchyard.edge.auth.changes import CHANNEL
from switchyard.edge.auth.secret import WRITE_ATTEMPTS
from switchyard.edge.auth.source import KeysSourceError
from tests.edge.auth.cluster import (
    ADMIN,
    KEYS,
    NAME,
    NS,
    USER,
    Cluster,
    dumped,
    emulated,
    replica,
    settings,
)
from tests.support.polling import eventually
from tests.support.redis import RedisServer


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    async with emulated(tmp_path) as cluster:
        yield cluster


def _watches(cluster: Cluster) -> list[kmock.Request]:
    return [r for r in cluster.edge_requests() if r.action == kmock.action.WATCH]


def _lists(cluster: Cluster) -> list[kmock.Request]:
    return [r for r in cluster.edge_requests() if r.action == kmock.action.LIST]


async def test_keys_made_on_one_replica_work_there_at_once_and_reach_the_other(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with replica(cluster, monkeypatch) as a, replica(cluster, monkeypatch) as b:
        assert a.store.authenticate(f"Bearer {USER}") is not None
        created = await a.admin.post("/keys", json={"name": "new", "tenant": "t", "models": ["*"]})
        assert created.status_code == 201, created.text
        secret = created.json()["key"]
        assert a.store.authenticate(f"Bearer {secret}") is not None  # before the call returned
        assert "new" in cluster.names()
        assert secret not in dumped(cluster)
        assert hash_key(secret) in cluster.document().model_dump_json()
        # The other replica: through its watch (no Redis here).
        await eventually(lambda: b.store.authenticate(f"Bearer {secret}"), what="b sees the key")
        listed = await b.admin.get("/keys")
        assert [k["name"] for k in listed.json()["data"]] == ["ops", "dev", "new"]

        # Disabled on b: refused there at once, on a through its watch.
        disabled = await b.admin.patch("/keys/new", json={"disabled": True})
        assert (disabled.status_code, disabled.json()["disabled"]) == (200, True)
        assert b.store.authenticate(f"Bearer {secret}") is None
        await eventually(
            lambda: a.store.authenticate(f"Bearer {secret}") is None, what="a refuses it"
        )
        deleted = await a.admin.delete("/keys/dev")
        assert deleted.status_code == 200
        assert a.store.authenticate(f"Bearer {USER}") is None
        await eventually(lambda: b.store.by_name("dev") is None, what="b forgets dev")
        assert cluster.names() == ["ops", "new"]


async def test_with_redis_a_revocation_is_in_force_everywhere_when_the_call_returns(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The watch is the source of truth; the Redis notice (auth.changes) makes a revocation
    apply on every replica before the admin call returns, as with the keys file: here with
    both watches failing and their next try seconds away, so only the notice can do it."""
    redis = RedisServer(tmp_path)
    await asyncio.to_thread(redis.start)
    listener = Redis.from_url(redis.url)
    try:
        async with (
            replica(cluster, monkeypatch, redis_url=redis.url, keys_secret_retry_s=10) as a,
            replica(cluster, monkeypatch, redis_url=redis.url, keys_secret_retry_s=10) as b,
        ):

            async def both_listening() -> bool:
                ((_, subscribers),) = await listener.pubsub_numsub(CHANNEL)
                return int(subscribers) == 2

            await eventually(both_listening, what="both replicas subscribed")
            cluster.api.fail_watches = 1000
            cluster.api.end_watches()
            await eventually(lambda: cluster.api.fail_watches == 998, what="both watches down")
            disabled = await b.admin.patch("/keys/dev", json={"disabled": True})
            assert disabled.status_code == 200
            assert disabled.headers[REPLICAS_HEADER] == "2/2"
            assert a.store.authenticate(f"Bearer {USER}") is None  # no waiting
            assert b.store.authenticate(f"Bearer {USER}") is None
    finally:
        await listener.aclose()
        await asyncio.to_thread(redis.close)


async def test_two_replicas_creating_at_once_both_land(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both read the same version (the server holds the first two reads until both came):
    one PUT is refused with 409, that replica reads again and writes on top."""
    async with replica(cluster, monkeypatch) as a, replica(cluster, monkeypatch) as b:
        cluster.api.gate_reads(2)
        first, second = await asyncio.gather(
            a.admin.post("/keys", json={"name": "from-a", "tenant": "t", "models": ["*"]}),
            b.admin.post("/keys", json={"name": "from-b", "tenant": "t", "models": ["*"]}),
        )
        assert (first.status_code, second.status_code) == (201, 201), (first.text, second.text)
        assert cluster.api.conflicts == 1
        assert sorted(cluster.names()) == ["dev", "from-a", "from-b", "ops"]
        keys = [f"Bearer {made.json()['key']}" for made in (first, second)]

        def both_everywhere() -> bool:
            return all(one.store.authenticate(key) for one in (a, b) for key in keys)

        await eventually(both_everywhere, what="both keys on both replicas")


async def test_a_refused_change_writes_nothing(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with replica(cluster, monkeypatch) as a:
        before = (cluster.api.version_of(NS, NAME), dumped(cluster))
        refusals = [
            (await a.admin.post("/keys", json={"name": "x", "tenant": "t", "models": ["*"], "rpm": 0}), 400),
            (await a.admin.post("/keys", json={"name": "x", "tenant": "t", "sha256": "0" * 64}), 400),
            (await a.admin.post("/keys", json={"name": "dev", "tenant": "t", "models": ["*"]}), 409),
            (await a.admin.patch("/keys/nobody", json={"rpm": 5}), 404),
            (await a.admin.patch("/keys/ops", json={"disabled": True}), 409),
            (await a.admin.put("/tenants/nobody/budget", json={"tokens": 5, "period": "day"}), 404),
            (await a.admin.post("/keys", content=b"{not json"), 400),
        ]  # fmt: skip
        for response, status in refusals:
            assert response.status_code == status, response.text
            assert set(response.json()["error"]) >= {"message", "type", "code"}
        assert (cluster.api.version_of(NS, NAME), dumped(cluster)) == before
        puts = [r for r in cluster.edge_requests() if r.method == kmock.method.PUT]
        assert puts == []


async def test_a_secret_that_keeps_changing_is_a_503_and_nothing_is_written(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with replica(cluster, monkeypatch) as a:
        before = (cluster.api.version_of(NS, NAME), dumped(cluster))
        cluster.api.conflict_always = True
        refused = await a.admin.post("/keys", json={"name": "x", "tenant": "t", "models": ["*"]})
        assert refused.status_code == 503
        error = refused.json()["error"]
        assert (error["type"], error["code"]) == ("server_error", "keys_secret_conflict")
        assert f"Secret {NS}/{NAME}" in error["message"]
        assert cluster.api.conflicts == WRITE_ATTEMPTS
        assert (cluster.api.version_of(NS, NAME), dumped(cluster)) == before
        assert a.store.by_name("x") is None


async def test_the_watch_resumes_after_expiry_410_gone_and_errors(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server ends each watch after 1 s (EDGE_KEYS_SECRET_WATCH_S): lightkube resumes it
    from its version. Compacted history (410 Gone): listed again. Failing watches: retried
    after a short, growing wait (EDGE_KEYS_SECRET_RETRY_S), then listed again."""
    async with replica(cluster, monkeypatch, keys_secret_watch_s=1) as a:
        await eventually(lambda: len(_watches(cluster)) >= 2, what="a second watch")
        assert len(_lists(cluster)) == 1  # resumed from its version, not listed again
        await cluster.write(KEYS.replace("name: dev", "name: dev2"))
        await eventually(lambda: a.store.by_name("dev2"), what="a change after the resume")

        cluster.api.compact()
        cluster.api.end_watches()
        await eventually(lambda: len(_lists(cluster)) >= 2, what="listed again after 410")
        await cluster.write(KEYS.replace("name: dev", "name: dev3"))
        await eventually(lambda: a.store.by_name("dev3"), what="a change after the re-list")

        lists = len(_lists(cluster))
        cluster.api.fail_watches = 2
        cluster.api.end_watches()
        await eventually(
            lambda: len(_lists(cluster)) >= lists + 2, what="listed after each failure"
        )
        assert cluster.api.fail_watches == 0
        await cluster.write(KEYS.replace("name: dev", "name: dev4"))
        await eventually(lambda: a.store.by_name("dev4"), what="a change after the failures")
        assert a.store.authenticate(f"Bearer {ADMIN}") is not None


async def test_an_invalid_or_missing_secret_keeps_the_keys_in_force(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with replica(cluster, monkeypatch) as a:
        with capture_logs() as logs:
            await cluster.write(KEYS.replace("role: admin", "role: boss"))

            def reported() -> bool:
                return any(log["event"] == "api_keys_reload_failed" for log in logs)

            await eventually(reported, what="the bad version reported")
        assert a.store.authenticate(f"Bearer {ADMIN}") is not None  # kept
        (failed,) = [log for log in logs if log["event"] == "api_keys_reload_failed"]
        assert "role" in failed["error"]
        assert failed["secret"] == f"{NS}/{NAME}"
        for hidden in (hash_key(ADMIN), hash_key(USER), ADMIN, USER):
            assert hidden not in repr(logs)
        # The admin API says what is wrong with it, and changes nothing.
        listed = await a.admin.get("/keys")
        assert (listed.status_code, listed.json()["error"]["code"]) == (409, "keys_secret_invalid")
        assert hash_key(ADMIN) not in listed.text


async def test_settings_and_start_up(cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError, match="EDGE_KEYS_FILE and EDGE_KEYS_SECRET are exclusive"):
        settings(keys_file=Path("keys.yaml"))
    # No namespace set: the client's own (the kubeconfig context's, as a pod's would be).
    monkeypatch.setenv("KUBECONFIG", str(cluster.edges_kubeconfig))
    with pytest.raises(KeysSourceError) as missing:
        async with replica(cluster, monkeypatch, keys_secret_namespace=None):
            pass
    assert (missing.value.status, missing.value.code) == (503, "keys_secret_missing")
    assert "Secret default/edge-keys does not exist" in str(missing.value)
    with pytest.raises(KeysSourceError) as no_key:
        async with replica(cluster, monkeypatch, keys_secret_key="other.yaml"):
            pass
    assert no_key.value.code == "keys_secret_invalid"
