"""The gRPC servicer's mapping of what translations read to the contract's messages: every
choice in a unary response (choice 0 also at the top level), stream messages per choice as
they come, each choice's finish on its own last message, usage once at the end; embeddings
relayed byte for byte; what the model does not serve refused before any engine call; what
readiness read of the model in ListModels.

The engine behind the servicer is scripted here (what it returns is the translation's
business, tested per engine); the servicer runs in a real gRPC server.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, cast

import grpc
import pytest

from switchyard.adapter.engine import EngineClient
from switchyard.adapter.health import Readiness
from switchyard.adapter.load import LoadReader
from switchyard.adapter.service import InferenceServicer
from switchyard.adapter.translation import (
    EMBEDDINGS,
    GENERATION,
    Choice,
    Completion,
    Delta,
    Embeddings,
    ModelDescription,
    ToolCall,
)
from switchyard.adapter_vllm.translation import VllmTranslation
from switchyard.inference.errors import from_rpc_error
from switchyard.inference.v1 import inference_pb2 as pb
from switchyard.inference.v1 import inference_pb2_grpc as pb_grpc
from tests.support.canonical import generate_request
from tests.support.embeddings import embed_request, float32_le

if TYPE_CHECKING:
    from switchyard.inference.v1.inference_pb2_grpc import InferenceServiceAsyncStub as Stub

MODEL = "demo"
LOGPROB = pb.TokenLogprob(token="Hi", logprob=-0.5, bytes=b"Hi")


class ScriptedEngine:
    """What the servicer asks of its engine client: a completion, or a stream of deltas that
    may wait at a gate (to show that messages are not held back)."""

    def __init__(
        self,
        completion: Completion | None = None,
        deltas: Sequence[Delta] = (),
        embeddings: Embeddings | None = None,
        count: int | None = None,
    ) -> None:
        self.translation = VllmTranslation(MODEL)
        self.completion = completion
        self.deltas = deltas
        self.embeddings = embeddings
        self.count = count
        #: Deltas that arrive together (one engine read each), instead of one by one.
        self.batches: Sequence[list[Delta]] = ()
        self.gate_after: int | None = None
        self.gate = asyncio.Event()
        #: Every engine call, by kind ("complete", "stream", "embed", "count").
        self.calls: list[str] = []

    async def complete(self, request: pb.GenerateRequest) -> Completion:
        self.calls.append("complete")
        assert self.completion is not None
        return self.completion

    async def embed(self, request: pb.EmbedRequest) -> Embeddings:
        self.calls.append("embed")
        assert self.embeddings is not None
        return self.embeddings

    async def count_tokens(self, request: pb.GenerateRequest) -> int:
        self.calls.append("count")
        if self.count is None:  # an engine that never answers
            await asyncio.Event().wait()
        assert self.count is not None
        return self.count

    async def _deltas(self) -> AsyncGenerator[list[Delta], None]:
        """`batches`, or one delta per batch (as an engine sends them one read apart)."""
        for batch in self.batches:
            yield batch
        for i, delta in enumerate(self.deltas):
            if i == self.gate_after:
                await self.gate.wait()
            yield [delta]

    def stream(self, request: pb.GenerateRequest) -> AsyncGenerator[list[Delta], None]:
        self.calls.append("stream")
        return self._deltas()


class Ready:
    ready = True
    max_model_len = 1024

    def __init__(self, model: ModelDescription | None = None) -> None:
        #: What readiness read of the model (None: not yet).
        self.model = model

    #: How many times a call told readiness the engine is unreachable.
    unreachable = 0

    def engine_unreachable(self) -> None:
        self.unreachable += 1


CHAT_MODEL = ModelDescription(GENERATION, 1024, identity="vllm:org/chat")
EMBEDDING_MODEL = ModelDescription(EMBEDDINGS, 512, embedding_dimensions=3, identity="vllm:e5")


@pytest.fixture
async def serve() -> AsyncIterator[Any]:
    servers: list[grpc.aio.Server] = []
    channels: list[grpc.aio.Channel] = []

    async def start(
        engine: ScriptedEngine,
        model: ModelDescription | None = None,
        *,
        readiness: Ready | None = None,
        stopping: bool = False,
    ) -> Stub:
        servicer = InferenceServicer(
            served_model_name=MODEL,
            engine=cast(EngineClient, engine),
            readiness=cast(Readiness, readiness or Ready(model)),
            load=cast(LoadReader, None),
            default_timeout_s=30,
        )
        if stopping:  # as the drain leaves it once its delay is over
            servicer.stop_admitting()
        server = grpc.aio.server()
        pb_grpc.add_InferenceServiceServicer_to_server(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        servers.append(server)
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        channels.append(channel)
        return pb_grpc.InferenceServiceStub(channel)

    yield start
    for channel in channels:
        await channel.close()
    for server in servers:
        await server.stop(None)


def chat(n: int = 1, include_usage: bool = True) -> pb.GenerateRequest:
    request = generate_request(MODEL, messages=[("user", "Hi")])
    request.n = n
    request.include_usage = include_usage
    return request


async def test_a_unary_response_carries_every_choice(serve: Any) -> None:
    completion = Completion(
        choices=(
            Choice("", pb.FINISH_REASON_TOOL_CALLS, 0, (ToolCall("c1", "weather", "{}"),), "Hmm"),
            Choice("Hi", pb.FINISH_REASON_STOP, 1, logprobs=(LOGPROB,)),
        ),
        prompt_tokens=7,
        completion_tokens=9,
    )
    stub = await serve(ScriptedEngine(completion))
    response = await stub.Generate(chat(n=2))
    assert (response.text, response.finish_reason) == ("", pb.FINISH_REASON_TOOL_CALLS)
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (7, 9)
    first, second = response.choices
    assert first == pb.GeneratedChoice(
        index=0,
        finish_reason=pb.FINISH_REASON_TOOL_CALLS,
        tool_calls=[pb.ToolCall(id="c1", name="weather", arguments="{}")],
        reasoning="Hmm",
    )
    assert second == pb.GeneratedChoice(
        index=1, text="Hi", finish_reason=pb.FINISH_REASON_STOP, logprobs=[LOGPROB]
    )


async def test_stream_messages_per_choice_and_each_choice_s_finish(serve: Any) -> None:
    call = pb.ToolCallDelta(index=0, id="c1", name="weather", arguments_delta="{}")
    deltas = [
        Delta(reasoning="Hmm", token_count=1, index=0, prompt_tokens=7, completion_tokens=1),
        Delta(text="Hi", token_count=1, index=1, logprobs=(LOGPROB,), completion_tokens=2),
        Delta(tool_calls=(call,), token_count=2, index=0, completion_tokens=4),
        Delta(finish_reason=pb.FINISH_REASON_TOOL_CALLS, index=0, completion_tokens=4),
        Delta(finish_reason=pb.FINISH_REASON_LENGTH, index=1, token_count=1, completion_tokens=5),
        Delta(prompt_tokens=7, completion_tokens=6, token_count=1),  # the usage-only last
    ]
    stub = await serve(ScriptedEngine(deltas=deltas))
    messages = [m async for m in stub.GenerateStream(chat(n=2))]
    *body, finish_0, finish_1 = messages
    assert [(m.index, m.reasoning_delta, m.text_delta) for m in body] == [
        (0, "Hmm", ""), (1, "", "Hi"), (0, "", ""), (1, "", ""), (0, "", ""),
    ]  # fmt: skip
    assert list(body[1].logprobs) == [LOGPROB]
    assert list(body[2].tool_calls) == [call]
    assert sum(m.token_count for m in body) == 6
    assert not any(m.finish_reason for m in body)
    assert (finish_0.index, finish_0.finish_reason) == (0, pb.FINISH_REASON_TOOL_CALLS)
    assert (finish_1.index, finish_1.finish_reason) == (1, pb.FINISH_REASON_LENGTH)
    assert not finish_0.HasField("usage")
    assert (finish_1.usage.prompt_tokens, finish_1.usage.completion_tokens) == (7, 6)


async def test_a_stream_message_is_sent_before_the_next_delta_exists(serve: Any) -> None:
    engine = ScriptedEngine(
        deltas=[
            Delta(text="Hi", token_count=1),
            Delta(finish_reason=pb.FINISH_REASON_STOP, token_count=1),
        ]
    )
    engine.gate_after = 1
    stub = await serve(engine)
    stream = stub.GenerateStream(chat())
    first = await stream.read()
    assert first.text_delta == "Hi"  # while the engine has not said more
    engine.gate.set()
    rest = []
    while (message := await stream.read()) is not grpc.aio.EOF:
        rest.append(message)
    assert [(m.token_count, m.finish_reason) for m in rest] == [
        (1, pb.FINISH_REASON_UNSPECIFIED),
        (0, pb.FINISH_REASON_STOP),
    ]


async def test_deltas_that_arrived_together_go_on_as_one_message_each_choice(
    serve: Any,
) -> None:
    engine = ScriptedEngine()
    engine.batches = [
        [
            Delta(text="Hi", token_count=1, index=0, logprobs=(LOGPROB,), prompt_tokens=4),
            Delta(text="Yo", token_count=1, index=1, logprobs=(LOGPROB,)),
            Delta(text=" there", token_count=1, index=0, logprobs=(LOGPROB,)),
            Delta(finish_reason=pb.FINISH_REASON_STOP, index=0, stop_sequence="!"),
        ],
        [
            Delta(text="!", token_count=1, index=1, logprobs=(LOGPROB,)),
            Delta(finish_reason=pb.FINISH_REASON_LENGTH, index=1),
            Delta(prompt_tokens=4, completion_tokens=5),  # one token no chunk showed
        ],
    ]
    stub = await serve(engine)
    request = chat(n=2)
    request.include_usage = True
    request.logprobs.top_logprobs = 0
    messages = [m async for m in stub.GenerateStream(request)]
    assert [(m.index, m.text_delta, m.token_count, len(m.logprobs)) for m in messages] == [
        (0, "Hi there", 2, 2), (1, "Yo", 1, 1), (1, "!", 1, 1), (0, "", 0, 0), (1, "", 1, 0),
    ]  # fmt: skip
    assert (messages[3].finish_reason, messages[3].stop_sequence) == (pb.FINISH_REASON_STOP, "!")
    assert messages[4].finish_reason == pb.FINISH_REASON_LENGTH
    assert (messages[4].usage.prompt_tokens, messages[4].usage.completion_tokens) == (4, 5)


async def test_a_stream_missing_a_choice_s_finish_is_the_engine_s_failure(serve: Any) -> None:
    deltas = [
        Delta(text="a", token_count=1, index=0, finish_reason=pb.FINISH_REASON_STOP),
        Delta(text="b", token_count=1, index=1),
    ]
    stub = await serve(ScriptedEngine(deltas=deltas))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        _ = [m async for m in stub.GenerateStream(chat(n=2))]
    assert from_rpc_error(caught.value).reason == pb.ENGINE_ERROR


async def test_a_stream_s_token_counts_add_up_to_the_engine_s_usage(serve: Any) -> None:
    """An engine that reports more tokens than its chunks showed (a tool call's markup, an
    end of sequence): the last message accounts for the rest."""
    deltas = [
        Delta(text="a", token_count=1, completion_tokens=1),
        Delta(finish_reason=pb.FINISH_REASON_STOP),
        Delta(prompt_tokens=3, completion_tokens=5),  # usage only, nothing settled
    ]
    stub = await serve(ScriptedEngine(deltas=deltas))
    messages = [m async for m in stub.GenerateStream(chat())]
    assert [m.token_count for m in messages] == [1, 4]
    assert messages[-1].usage.completion_tokens == 5


VECTORS = (float32_le([0.25, -1.5, 3.0e-8]), float32_le([1.0, 0.0, -0.0]))


async def test_once_it_stops_admitting_every_call_is_unavailable_before_the_engine(
    serve: Any,
) -> None:
    engine = ScriptedEngine(
        completion=Completion((Choice("Hi", pb.FINISH_REASON_STOP, 0),), 1, 1),
        deltas=[Delta(text="Hi", token_count=1)],
        embeddings=Embeddings(VECTORS, prompt_tokens=5),
        count=3,
    )
    readiness = Ready(CHAT_MODEL)
    stub = await serve(engine, readiness=readiness, stopping=True)
    calls: dict[str, Callable[[], Awaitable[object]]] = {
        "Generate": lambda: stub.Generate(chat()),
        "GenerateStream": lambda: stub.GenerateStream(chat()).read(),
        "CountTokens": lambda: stub.CountTokens(chat()),
        "Embed": lambda: stub.Embed(embed_request(MODEL, "a")),
    }
    for name, call in calls.items():
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call()
        error = from_rpc_error(caught.value)
        assert (error.code, error.reason) == (
            grpc.StatusCode.UNAVAILABLE,
            pb.ENGINE_UNAVAILABLE,
        ), name
        assert "shutting down" in error.message
    assert engine.calls == []
    # The engine is fine: a replica shutting down must not call it unreachable.
    assert readiness.unreachable == 0


async def test_embed_relays_every_vector_byte_for_byte(serve: Any) -> None:
    engine = ScriptedEngine(embeddings=Embeddings(VECTORS, prompt_tokens=5))
    stub = await serve(engine, EMBEDDING_MODEL)
    response = await stub.Embed(embed_request(MODEL, "a b", "c"))
    assert [e.float32_le for e in response.embeddings] == list(VECTORS)
    assert response.prompt_tokens == 5
    assert engine.calls == ["embed"]


async def test_embed_on_a_generation_model_is_refused_before_the_engine(serve: Any) -> None:
    engine = ScriptedEngine(embeddings=Embeddings(VECTORS, prompt_tokens=5))
    stub = await serve(engine, CHAT_MODEL)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Embed(embed_request(MODEL, "a", "b"))
    error = from_rpc_error(caught.value)
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, pb.UNSUPPORTED_FEATURE)
    assert error.message == "model 'demo' does not support embeddings"
    assert error.metadata == {"param": "model"}
    assert engine.calls == []


@pytest.mark.parametrize(
    ("request_", "what"),
    [
        (generate_request(MODEL, messages=[("user", "Hi")]), "chat completions"),
        (generate_request(MODEL, prompt="Once"), "completions"),
    ],
    ids=["chat", "prompt"],
)
async def test_generation_on_an_embedding_model_is_refused_before_the_engine(
    serve: Any, request_: pb.GenerateRequest, what: str
) -> None:
    engine = ScriptedEngine(Completion((Choice("x", pb.FINISH_REASON_STOP),), 1, 1))
    stub = await serve(engine, EMBEDDING_MODEL)
    for call in (stub.Generate(request_), stub.GenerateStream(request_)):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            _ = await call if isinstance(call, grpc.aio.UnaryUnaryCall) else [m async for m in call]
        error = from_rpc_error(caught.value)
        assert (error.code, error.reason) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            pb.UNSUPPORTED_FEATURE,
        )
        assert error.message == f"model 'demo' does not support {what}"
    assert engine.calls == []


async def test_a_model_not_read_yet_leaves_the_engine_to_decide(serve: Any) -> None:
    engine = ScriptedEngine(embeddings=Embeddings(VECTORS[:1], prompt_tokens=1))
    stub = await serve(engine, None)
    response = await stub.Embed(embed_request(MODEL, "a"))
    assert [e.float32_le for e in response.embeddings] == [VECTORS[0]]
    assert engine.calls == ["embed"]


@pytest.mark.parametrize(
    ("vectors", "dimensions"),
    [(VECTORS[:1], None), (VECTORS, 2)],
    ids=["fewer-vectors-than-inputs", "another-size-than-asked"],
)
async def test_vectors_that_do_not_answer_the_request_are_the_engine_s_failure(
    serve: Any, vectors: tuple[bytes, ...], dimensions: int | None
) -> None:
    engine = ScriptedEngine(embeddings=Embeddings(vectors, prompt_tokens=2))
    stub = await serve(engine, EMBEDDING_MODEL)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Embed(embed_request(MODEL, "a", "b", dimensions=dimensions))
    error = from_rpc_error(caught.value)
    assert (error.code, error.reason) == (grpc.StatusCode.INTERNAL, pb.ENGINE_ERROR)


async def test_an_invalid_embed_request_never_reaches_the_engine(serve: Any) -> None:
    engine = ScriptedEngine(embeddings=Embeddings(VECTORS, prompt_tokens=2))
    stub = await serve(engine, EMBEDDING_MODEL)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Embed(embed_request(MODEL))
    assert from_rpc_error(caught.value).code == grpc.StatusCode.INVALID_ARGUMENT
    assert engine.calls == []


@pytest.mark.parametrize("model", [CHAT_MODEL, EMBEDDING_MODEL], ids=["chat", "embedding"])
async def test_list_models_reports_what_readiness_read(serve: Any, model: ModelDescription) -> None:
    stub = await serve(ScriptedEngine(), model)
    (info,) = (await stub.ListModels(pb.ListModelsRequest())).models
    assert set(info.capabilities) == set(model.capabilities)
    assert info.embedding_dimensions == model.embedding_dimensions
    assert info.identity == model.identity
    assert (info.id, info.engine) == (MODEL, "vllm")


async def test_count_tokens_relays_the_engine_s_count(serve: Any) -> None:
    engine = ScriptedEngine(count=42)
    stub = await serve(engine, CHAT_MODEL)
    assert await stub.CountTokens(chat(n=2)) == pb.TokenCount(input_tokens=42)
    assert engine.calls == ["count"]


@pytest.mark.parametrize(
    "request_",
    [
        generate_request("another-model", messages=[("user", "Hi")]),
        generate_request(MODEL),  # neither a prompt nor a chat
        generate_request(MODEL, prompt="Hi", temperature=-1),
    ],
    ids=["model", "no-input", "temperature"],
)
async def test_count_tokens_refuses_what_generate_refuses_before_the_engine(
    serve: Any, request_: pb.GenerateRequest
) -> None:
    engine = ScriptedEngine(count=42, completion=Completion((), 0, 0))
    stub = await serve(engine, CHAT_MODEL)
    with pytest.raises(grpc.aio.AioRpcError) as generated:
        await stub.Generate(request_)
    with pytest.raises(grpc.aio.AioRpcError) as counted:
        await stub.CountTokens(request_)
    assert counted.value.code() == generated.value.code() != grpc.StatusCode.OK
    assert from_rpc_error(counted.value).reason == from_rpc_error(generated.value).reason
    assert engine.calls == []


async def test_count_tokens_on_an_embedding_model_is_refused_before_the_engine(
    serve: Any,
) -> None:
    engine = ScriptedEngine(count=42)
    stub = await serve(engine, EMBEDDING_MODEL)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CountTokens(chat())
    error = from_rpc_error(caught.value)
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, pb.UNSUPPORTED_FEATURE)
    assert engine.calls == []


async def test_count_tokens_ends_at_the_caller_s_deadline(serve: Any) -> None:
    engine = ScriptedEngine()  # never answers
    stub = await serve(engine, CHAT_MODEL)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CountTokens(chat(), timeout=0.5)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert engine.calls == ["count"]


async def test_a_unary_choice_names_the_stop_string_that_ended_it(serve: Any) -> None:
    completion = Completion(
        choices=(
            Choice("Hi", pb.FINISH_REASON_STOP, 0, stop_sequence="\n\n"),
            Choice("Hi", pb.FINISH_REASON_STOP, 1),  # EOS
            # Only a STOP finish names one (a translation's slip is not relayed).
            Choice("Hi", pb.FINISH_REASON_LENGTH, 2, stop_sequence="x"),
        ),
        prompt_tokens=1,
        completion_tokens=3,
    )
    stub = await serve(ScriptedEngine(completion))
    response = await stub.Generate(chat(n=3))
    assert [c.stop_sequence for c in response.choices] == ["\n\n", "", ""]


async def test_a_stream_s_last_message_names_the_stop_string(serve: Any) -> None:
    deltas = [
        Delta(text="Hi", token_count=1, index=0),
        Delta(text="Ho", token_count=1, index=1),
        Delta(finish_reason=pb.FINISH_REASON_STOP, index=0, stop_sequence="END"),
        Delta(finish_reason=pb.FINISH_REASON_STOP, index=1),
        Delta(prompt_tokens=1, completion_tokens=2),
    ]
    stub = await serve(ScriptedEngine(deltas=deltas))
    messages = [m async for m in stub.GenerateStream(chat(n=2))]
    *body, last_0, last_1 = messages
    assert not any(m.stop_sequence for m in body)
    assert (last_0.index, last_0.finish_reason, last_0.stop_sequence) == (
        0,
        pb.FINISH_REASON_STOP,
        "END",
    )
    assert (last_1.index, last_1.stop_sequence) == (1, "")
