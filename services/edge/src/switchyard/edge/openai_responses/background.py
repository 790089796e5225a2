"""Which background jobs an edge process runs: in Redis beside the Redis store, else here."""

from __future__ import annotations

from switchyard.edge.openai_responses.job_run import JobRunner
from switchyard.edge.openai_responses.jobs import BackgroundJobs
from switchyard.edge.openai_responses.memory_jobs import MemoryJobs
from switchyard.edge.openai_responses.redis_jobs import BLOCK_S, RedisJobs
from switchyard.edge.openai_responses.redis_store import RedisResponseStore
from switchyard.edge.redis_pool import RedisConnections
from switchyard.edge.state import EdgeState

#: The workers' blocking connections: the queue's read and the cancels' subscription.
WORKER_CONNECTIONS = 2


def create_jobs(edge: EdgeState) -> BackgroundJobs:
    """The jobs for `edge.responses` (call `start` before the edge is ready)."""
    s = edge.settings

    def capacity() -> int:
        # Jobs held at once by this process: the per-model bound for each model it serves
        # (none before the routes are known: a job would fail for an unknown model; none
        # once a shutdown's grace is over: it would be ended as soon as it began).
        if not edge.routes_synced() or edge.drain.over:
            return 0
        return s.jobs_concurrency_per_model * len(edge.routes.routes)

    runner = JobRunner(edge)
    if isinstance(edge.responses, RedisResponseStore):
        url = s.responses_store_url
        assert url is not None  # the settings require one with the Redis store

        # Blocking reads hold their connection for up to BLOCK_S: pools of their own,
        # with room for that wait; the workers' (a read and the cancels' subscription)
        # apart from the followers' of event logs.
        def blocking(connections: int) -> RedisConnections:
            return RedisConnections(
                url,
                max_connections=connections,
                timeout_s=s.redis_timeout_s + BLOCK_S,
                connect_timeout_s=s.redis_connect_timeout_s,
                pool_timeout_s=s.redis_pool_timeout_s,
            )

        return RedisJobs(
            edge.responses,
            blocking(WORKER_CONNECTIONS),
            blocking(s.redis_max_connections),
            runner,
            concurrency_per_model=s.jobs_concurrency_per_model,
            max_queued=s.jobs_max_queued,
            lease_s=s.jobs_lease_s,
            capacity=capacity,
        )
    return MemoryJobs(
        edge.responses,
        runner,
        concurrency_per_model=s.jobs_concurrency_per_model,
        max_queued=s.jobs_max_queued,
        max_entries=s.responses_max_entries,
        lease_s=s.jobs_lease_s,
        capacity=capacity,
    )
