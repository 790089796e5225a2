"""Background responses with the memory store: one edge process runs its own jobs."""

from __future__ import annotations

import openai
import pytest

from switchyard.devstack.components import served_name
from tests.edge.conftest import sim_stats
from tests.support.edge import Edge
from tests.support.polling import eventually
from tests.support.stacks import ENGINES, Stack

pytestmark = pytest.mark.usefixtures("responses_quiet_after")

MODEL = "demo-vllm"


@pytest.mark.parametrize("engine", ENGINES)
async def test_a_background_response_runs_and_is_polled_to_completion(
    responses_edge: Edge, engine: str
) -> None:
    sdk = responses_edge.client()
    created = await sdk.responses.create(
        model=served_name(engine), input="Say hello.", background=True, max_output_tokens=16
    )
    assert created.status == "queued"

    async def finished() -> object:
        response = await sdk.responses.retrieve(created.id)
        return response if response.status in ("completed", "incomplete") else None

    done = await eventually(finished, what="the job finished")
    assert isinstance(done, openai.types.responses.Response)
    assert done.output  # reasoning, text or both: the simulator reasons first
    assert done.usage is not None
    assert done.usage.output_tokens > 0
    with pytest.raises(openai.NotFoundError):
        await responses_edge.client("other-tenant").responses.retrieve(created.id)


@pytest.mark.parametrize("engine", ENGINES)
async def test_a_background_response_is_cancelled_in_the_engine(
    responses_edge: Edge, feature_stacks: dict[str, Stack], engine: str
) -> None:
    stack, sdk = feature_stacks[engine], responses_edge.client()
    before = await sim_stats(stack)
    async with stack.stalled(count=1):
        created = await sdk.responses.create(
            model=served_name(engine), input="Go on.", background=True, max_output_tokens=500
        )

        async def stalled() -> bool:
            return bool((await sim_stats(stack))["in_flight"] > before["in_flight"])

        await eventually(stalled, what="the job's generation held in the engine")
        cancelled = await sdk.responses.cancel(created.id)
        assert cancelled.status == "cancelled"

        async def aborted() -> bool:
            return bool((await sim_stats(stack))["aborted"] > before["aborted"])

        await eventually(aborted, what="the engine's generation aborted")
    with pytest.raises(openai.BadRequestError):
        await sdk.responses.cancel(created.id)


async def test_a_background_stream_is_followed_and_resumed(responses_edge: Edge) -> None:
    sdk = responses_edge.client()
    stream = await sdk.responses.create(
        model=MODEL, input="A story.", background=True, stream=True, max_output_tokens=16
    )
    events = [e async for e in stream]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    response_id = events[0].response.id  # type: ignore[union-attr]
    resumed = await sdk.responses.retrieve(response_id, stream=True, starting_after=2)
    assert [e.model_dump() async for e in resumed] == [e.model_dump() for e in events[3:]]
