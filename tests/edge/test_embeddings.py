"""POST /v1/embeddings through a real edge process, with the official `openai` SDK as client.

The backends are adapters served from this process (gRPC, with grpc's own health service):
one embedding model, whose vectors are the simulators' (`switchyard.enginesim.embedding`)
and which refuses what an engine refuses, and one chat model. Each records the calls it
gets, so a test can tell what reached the backend and what the edge refused itself.
"""

from __future__ import annotations

import asyncio
import base64
import math
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import httpx
import numpy as np
import openai
import orjson
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

from switchyard.edge.auth import generate_key, hash_key
from switchyard.edge.auth.keysfile import KeyEntry, render_keys
from switchyard.edge.embeddings import answer_body, encode
from switchyard.edge.routing.endpoints import SERVICE_NAME
from switchyard.enginesim import embedding, tokenizer
from switchyard.enginesim.tokenizer import VOCAB_SIZE
from switchyard.inference.errors import InferenceError
from switchyard.inference.v1 import inference_pb2 as pb
from switchyard.inference.v1 import inference_pb2_grpc as pb_grpc
from tests.support.edge import Edge, start_edge
from tests.support.polling import eventually

#: The routes `start_edge` names after the engines; here the vllm one is a fake embedding
#: model and the sglang one a fake chat model.
EMBED = "demo-vllm"
CHAT = "demo-sglang"
DIMENSIONS = 64
MAX_MODEL_LEN = 32
MAX_INPUTS = 8
IDENTITY = "fake:embed@v1"
TPM = 600
PATH = "/v1/embeddings"


class FakeAdapter(pb_grpc.InferenceServiceServicer):
    """An adapter as the contract has it: ListModels, and Embed for an embedding model."""

    def __init__(self, info: pb.ModelInfo) -> None:
        self.info = info
        self.calls: list[pb.EmbedRequest] = []
        #: Answer one vector fewer than asked for (an adapter bug).
        self.short = False

    # Never called here: the edge refuses chat on an embedding model before any call.
    async def Generate(
        self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.GenerateResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not served by this fake")

    async def GenerateStream(
        self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> AsyncIterator[pb.GenerateStreamResponse]:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not served by this fake")
        yield pb.GenerateStreamResponse()  # never reached: abort raises

    async def CountTokens(
        self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.TokenCount:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not served by this fake")

    async def GetLoad(
        self, request: pb.GetLoadRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.LoadReport:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not served by this fake")

    async def ListModels(
        self, request: pb.ListModelsRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.ListModelsResponse:
        return pb.ListModelsResponse(models=[self.info])

    async def Embed(
        self, request: pb.EmbedRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.EmbedResponse:
        self.calls.append(request)
        try:
            return self._embed(request)
        except InferenceError as error:
            await context.abort_with_status(error.to_status())
            raise AssertionError("abort_with_status returns only by raising") from None

    def _embed(self, request: pb.EmbedRequest) -> pb.EmbedResponse:
        if pb.CAPABILITY_EMBEDDINGS not in self.info.capabilities:
            raise InferenceError(
                grpc.StatusCode.INVALID_ARGUMENT, pb.UNSUPPORTED_FEATURE, "not an embedding model"
            )
        size = request.dimensions if request.HasField("dimensions") else DIMENSIONS
        if size > DIMENSIONS:
            raise InferenceError(
                grpc.StatusCode.INVALID_ARGUMENT,
                pb.UNSUPPORTED_FEATURE,
                f"dimensions {size} is more than the model's {DIMENSIONS}",
                {"param": "dimensions"},
            )
        response = pb.EmbedResponse()
        for item in request.inputs:
            ids = list(item.tokens.ids) if item.HasField("tokens") else _tokens(item.text)
            if not ids:
                raise InferenceError.invalid("input cannot be empty", "input")
            if max(ids) >= VOCAB_SIZE:
                raise InferenceError.invalid(f"token id {max(ids)} is out of vocabulary", "input")
            response.embeddings.add(float32_le=vector(ids, size).astype("<f4").tobytes())
            response.prompt_tokens += len(ids)
        if self.short:
            del response.embeddings[-1]
        return response


def _tokens(text: str) -> list[int]:
    return tokenizer.encode(text)


def vector(ids: Sequence[int], size: int = DIMENSIONS) -> np.ndarray:
    full = embedding.embed(EMBED, ids, DIMENSIONS)
    return full if size == DIMENSIONS else embedding.shortened(full, size)


def expected(text: str) -> list[float]:
    """The exact floats a client should see for `text`: the float32 values, widened."""
    return [float(v) for v in vector(_tokens(text))]


@dataclass
class World:
    edge: Edge
    embedder: FakeAdapter
    chat: FakeAdapter
    servers: list[grpc.aio.Server] = field(default_factory=list)

    def client(self, key: str = "full") -> openai.AsyncOpenAI:
        return self.edge.client(key)


async def _serve(adapter: FakeAdapter) -> tuple[grpc.aio.Server, str]:
    server = grpc.aio.server()
    pb_grpc.add_InferenceServiceServicer_to_server(adapter, server)
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    await health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
    return server, f"127.0.0.1:{port}"


def _keyring(directory: Path) -> tuple[dict[str, str], Path]:
    """Keys: `full` and `metered` out of the cache; two tenants' keys in it."""
    specs = [
        ("full", "one", None, False),
        ("metered", "one", TPM, False),
        ("metered-2", "one", TPM, False),
        ("alpha-1", "alpha", None, True),
        ("alpha-2", "alpha", None, True),
        ("beta", "beta", None, True),
    ]
    plain = {name: generate_key() for name, *_ in specs}
    entries = [
        KeyEntry(
            name=name,
            tenant=tenant,
            sha256=hash_key(plain[name]),
            models=["*"],
            tpm=tpm,
            cache=cache,
        )
        for name, tenant, tpm, cache in specs
    ]
    path = directory / "keys.yaml"
    path.write_text(render_keys(entries))
    return plain, path


@pytest.fixture(scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    embedder = FakeAdapter(
        pb.ModelInfo(
            id=EMBED,
            engine="vllm",
            max_model_len=MAX_MODEL_LEN,
            capabilities=[pb.CAPABILITY_EMBEDDINGS],
            embedding_dimensions=DIMENSIONS,
            identity=IDENTITY,
        )
    )
    chat = FakeAdapter(
        pb.ModelInfo(
            id=CHAT,
            engine="sglang",
            max_model_len=MAX_MODEL_LEN,
            capabilities=[pb.CAPABILITY_CHAT, pb.CAPABILITY_COMPLETIONS],
            identity="fake:chat@v1",
        )
    )
    servers: list[grpc.aio.Server] = []
    try:
        addresses = {}
        for engine, adapter in (("vllm", embedder), ("sglang", chat)):
            server, addresses[engine] = await _serve(adapter)
            servers.append(server)
        log_dir = tmp_path_factory.mktemp("edge-embeddings")
        edge = await asyncio.to_thread(
            start_edge,
            log_dir,
            {engine: [address] for engine, address in addresses.items()},
            keyring=_keyring(log_dir),
            env={"EDGE_MAX_EMBEDDING_INPUTS": str(MAX_INPUTS), "EDGE_CACHE": "memory"},
        )
        try:
            running = World(edge, embedder, chat, servers)
            await _wait_serving(running)
            yield running
        finally:
            await asyncio.to_thread(edge.stop)
    finally:
        for server in servers:
            await server.stop(None)


async def _wait_serving(world: World) -> None:
    """Both models answer something other than 503 (the edge follows their health)."""
    async with httpx.AsyncClient(base_url=world.edge.url, timeout=30) as client:
        for model in (EMBED, CHAT):

            async def answered(model: str = model) -> bool:
                body = {"model": model, "input": "warm up", "encoding_format": "float"}
                response = await client.post(PATH, json=body, headers=world.edge.auth())
                return response.status_code != 503

            await eventually(answered, what=f"{model} served")
    world.embedder.calls.clear()


@pytest.fixture
def calls(world: World) -> list[pb.EmbedRequest]:
    """The Embed calls the embedding model gets during the test."""
    world.embedder.calls.clear()
    return world.embedder.calls


async def _post(
    world: World, body: Mapping[str, object], key: str = "full", **headers: str
) -> httpx.Response:
    async with httpx.AsyncClient(base_url=world.edge.url, timeout=30) as client:
        return await client.post(PATH, json=body, headers={**world.edge.auth(key), **headers})


def _message(error: openai.APIStatusError) -> str:
    """The error's own message (the SDK's `message` prefixes the status)."""
    body = error.body
    assert isinstance(body, dict)
    message = body["message"]
    assert isinstance(message, str)
    return message


def _cosine(a: Sequence[float], b: Sequence[float]) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


# -- what a client gets -------------------------------------------------------------------------


async def test_float_and_base64_carry_the_same_exact_float32_values(
    world: World, calls: list[pb.EmbedRequest]
) -> None:
    client = world.client()
    text = "The switchyard sorts freight cars onto tracks."
    as_floats = await client.embeddings.create(model=EMBED, input=text, encoding_format="float")
    as_base64 = await client.embeddings.create(model=EMBED, input=text)  # the SDK's default
    want = expected(text)
    assert as_floats.data[0].embedding == want
    assert as_base64.data[0].embedding == want
    assert len(want) == DIMENSIONS
    assert (as_floats.model, as_floats.object, as_floats.data[0].object) == (
        EMBED,
        "list",
        "embedding",
    )
    # On the wire, base64 is the very little-endian float32 bytes the adapter answered.
    raw = await _post(world, {"model": EMBED, "input": text, "encoding_format": "base64"})
    sent = base64.b64decode(raw.json()["data"][0]["embedding"])
    assert sent == vector(_tokens(text)).astype("<f4").tobytes()
    assert len(calls) == 3


async def test_the_same_input_gets_the_same_vector_and_related_texts_are_closer(
    world: World,
) -> None:
    client = world.client()
    texts = [
        "the freight train leaves the yard at dawn",
        "a freight train leaves the yard",
        "purple elephants enjoy quantum chess",
    ]
    first = await client.embeddings.create(model=EMBED, input=texts)
    again = await client.embeddings.create(model=EMBED, input=texts[0])
    vectors = [d.embedding for d in first.data]
    assert again.data[0].embedding == vectors[0]
    assert _cosine(vectors[0], vectors[1]) > _cosine(vectors[0], vectors[2])
    assert math.isclose(float(np.linalg.norm(vectors[0])), 1.0, rel_tol=1e-5)


async def test_a_batch_is_one_backend_call_answered_in_input_order(
    world: World, calls: list[pb.EmbedRequest]
) -> None:
    texts = [f"document number {i} about tracks" for i in range(MAX_INPUTS)]
    result = await world.client().embeddings.create(model=EMBED, input=texts)
    assert len(calls) == 1
    assert [i.text for i in calls[0].inputs] == texts
    assert [d.index for d in result.data] == list(range(MAX_INPUTS))
    assert [d.embedding for d in result.data] == [expected(t) for t in texts]
    tokens = sum(len(_tokens(t)) for t in texts)
    assert result.usage.prompt_tokens == result.usage.total_tokens == tokens


async def test_token_id_inputs_go_to_the_engine_as_token_ids(
    world: World, calls: list[pb.EmbedRequest]
) -> None:
    client = world.client()
    ids = _tokens("signal box")
    one = await client.embeddings.create(model=EMBED, input=ids, encoding_format="float")
    many = await client.embeddings.create(model=EMBED, input=[ids, ids[:1]])
    assert [list(i.tokens.ids) for i in calls[0].inputs] == [ids]
    assert [list(i.tokens.ids) for i in calls[1].inputs] == [ids, ids[:1]]
    assert one.data[0].embedding == expected("signal box")
    assert many.data[1].embedding == [float(v) for v in vector(ids[:1])]
    assert (one.usage.prompt_tokens, many.usage.prompt_tokens) == (len(ids), len(ids) + 1)


async def test_dimensions_shorten_the_vectors_where_the_model_can(
    world: World, calls: list[pb.EmbedRequest]
) -> None:
    client = world.client()
    short = await client.embeddings.create(model=EMBED, input="points", dimensions=16)
    assert short.data[0].embedding == [float(v) for v in vector(_tokens("points"), 16)]
    assert calls[0].dimensions == 16
    with pytest.raises(openai.BadRequestError) as refused:
        await client.embeddings.create(model=EMBED, input="points", dimensions=DIMENSIONS + 1)
    assert f"more than the model's {DIMENSIONS}" in refused.value.message
    assert refused.value.param == "dimensions"


async def test_the_request_is_recorded_as_embeddings_with_prompt_tokens_only(
    world: World,
) -> None:
    request_id = uuid.uuid4().hex
    response = await _post(
        world, {"model": EMBED, "input": ["one two", "three"]}, **{"x-request-id": request_id}
    )
    assert response.status_code == 200
    record = await world.edge.record(request_id)
    assert (record["api"], record["status"], record["route"]) == ("embeddings", 200, EMBED)
    assert (record["prompt_tokens"], record["completion_tokens"]) == (
        response.json()["usage"]["prompt_tokens"],
        0,
    )


async def test_an_answer_that_does_not_match_the_request_is_never_passed_on(
    world: World,
) -> None:
    world.embedder.short = True
    try:
        response = await _post(world, {"model": EMBED, "input": ["one", "two"]})
    finally:
        world.embedder.short = False
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "backend_error"


def test_floats_are_the_float32_values_widened_and_base64_their_bytes() -> None:
    values = np.array([0.1, -1 / 3, 1e-8], dtype="<f4")
    answer = pb.EmbedResponse(prompt_tokens=2)
    answer.embeddings.add(float32_le=values.tobytes())
    as_floats = orjson.loads(answer_body(answer, "m", "float"))
    # 0.1 as float32 is 0.100000001490116...: what a client gets is that value, exactly.
    assert as_floats["data"][0]["embedding"] == [float(v) for v in values]
    assert as_floats["data"][0]["embedding"][0] != 0.1
    assert as_floats["usage"] == {"prompt_tokens": 2, "total_tokens": 2}
    as_base64 = orjson.loads(answer_body(answer, "m", "base64"))
    assert base64.b64decode(as_base64["data"][0]["embedding"]) == values.tobytes()


async def test_a_large_float_answer_encodes_the_same_off_the_event_loop() -> None:
    answer = pb.EmbedResponse(prompt_tokens=40)
    for i in range(40):  # 40 x 1024 floats: encoded in a thread
        answer.embeddings.add(float32_le=np.full(1024, i / 7, dtype="<f4").tobytes())
    encoded = orjson.loads(await encode(answer, "m", "float"))
    assert encoded == orjson.loads(answer_body(answer, "m", "float"))
    assert encoded["data"][39]["embedding"][0] == float(np.float32(39 / 7))


# -- models that do not embed, and embedding models asked to chat -------------------------------


async def test_a_chat_model_refuses_embeddings_and_an_embedding_model_refuses_chat(
    world: World,
) -> None:
    client = world.client()
    with pytest.raises(openai.BadRequestError) as no_embeddings:
        await client.embeddings.create(model=CHAT, input="hello")
    assert _message(no_embeddings.value) == f"model '{CHAT}' does not support embeddings"
    assert no_embeddings.value.code == "model_not_supported"
    with pytest.raises(openai.BadRequestError) as no_chat:
        await client.chat.completions.create(
            model=EMBED, messages=[{"role": "user", "content": "hi"}]
        )
    assert _message(no_chat.value) == f"model '{EMBED}' does not support chat completions"
    assert world.chat.calls == []


# -- bad input: 400 in OpenAI's shape, nothing charged ------------------------------------------


Bad = dict[str, tuple[dict[str, object], str]]
BAD_AT_THE_EDGE: Bad = {
    "an empty list": ({"input": []}, "must not be an empty list"),
    "an empty token list": ({"input": [[1, 2], []]}, "must not contain an empty list"),
    "an unknown encoding": (
        {"input": "x", "encoding_format": "hex"},
        "Input should be 'float' or 'base64'",
    ),
    "zero dimensions": ({"input": "x", "dimensions": 0}, "greater than or equal to 1"),
    "too many inputs": (
        {"input": ["x"] * (MAX_INPUTS + 1)},
        f"at most {MAX_INPUTS} are allowed",
    ),
    "a token input past the context": (
        {"input": [1] * (MAX_MODEL_LEN + 1)},
        f"maximum context length of {MAX_MODEL_LEN} tokens",
    ),
    "a negative token id": ({"input": [-1]}, "token ids are integers from 0 to 4294967295"),
    "a mixed list": ({"input": [1, "a"]}, "must be a string, a list of strings, a list of"),
    "a number": ({"input": 7}, "must be a string, a list of strings, a list of"),
}
BAD_AT_THE_ENGINE: Bad = {
    "an empty string": ({"input": ["fine", ""]}, "input cannot be empty"),
    "a token id out of the vocabulary": ({"input": [[1, VOCAB_SIZE]]}, "out of vocabulary"),
}


@pytest.mark.parametrize(("body", "message"), BAD_AT_THE_EDGE.values(), ids=list(BAD_AT_THE_EDGE))
async def test_bad_input_the_edge_can_see_is_refused_before_the_backend(
    world: World, calls: list[pb.EmbedRequest], body: dict[str, object], message: str
) -> None:
    response = await _post(world, {"model": EMBED, **body}, key="metered")
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] in ("input", "encoding_format", "dimensions")
    assert message in error["message"]
    assert calls == []


@pytest.mark.parametrize(
    ("body", "message"), BAD_AT_THE_ENGINE.values(), ids=list(BAD_AT_THE_ENGINE)
)
async def test_bad_input_the_engine_refuses_is_a_400_with_its_words(
    world: World, calls: list[pb.EmbedRequest], body: dict[str, object], message: str
) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        await world.client("metered").embeddings.create(model=EMBED, **body)  # type: ignore[arg-type]
    assert message in refused.value.message
    assert refused.value.param == "input"
    assert len(calls) == 1


async def test_bad_input_charges_no_tokens(world: World) -> None:
    # Every refusal above used the metered key: had any kept a charge, this request's
    # remaining tokens would show it (refills never exceed the limit: no timing involved).
    for body, _ in [*BAD_AT_THE_EDGE.values(), *BAD_AT_THE_ENGINE.values()]:
        assert (await _post(world, {"model": EMBED, **body}, key="metered")).status_code == 400
    ids = [1, 2, 3, 4]
    response = await _post(world, {"model": EMBED, "input": ids}, key="metered")
    assert response.status_code == 200
    assert response.headers["x-ratelimit-remaining-tokens"] == str(TPM - len(ids))


async def test_tokens_are_charged_with_the_engine_count_not_the_estimate(world: World) -> None:
    # Long words: the edge reserves ~1 token per 3 bytes, the engine counts far fewer.
    text = " ".join(["important"] * 60)
    real = len(_tokens(text))
    estimate = len(text.encode()) // 3 + 1
    assert estimate > real + 40  # so charging the estimate would be visible
    ids = [5, 6, 7]
    request_id = uuid.uuid4().hex
    sent = time.monotonic()
    first = await _post(
        world, {"model": EMBED, "input": text}, "metered-2", **{"x-request-id": request_id}
    )
    assert first.json()["usage"]["prompt_tokens"] == real
    await world.edge.record(request_id)  # logged once the charge was corrected
    second = await _post(world, {"model": EMBED, "input": ids}, key="metered-2")
    elapsed = time.monotonic() - sent
    charged = TPM - len(ids) - int(second.headers["x-ratelimit-remaining-tokens"])
    refilled = math.ceil((elapsed + 0.1) * TPM / 60)
    # The real count, less what refilled meanwhile (one more for rounding).
    assert real - refilled - 1 <= charged <= real, (charged, real, refilled)
    assert int(first.headers["x-ratelimit-remaining-tokens"]) <= TPM - estimate


# -- the response cache ------------------------------------------------------------------------


async def _create(
    world: World, key: str, text: str, **extra: object
) -> tuple[str | None, list[float]]:
    """The x-switchyard-cache header and the vector of one embeddings request."""
    raw = await world.client(key).embeddings.with_raw_response.create(
        model=EMBED,
        input=text,
        **extra,  # type: ignore[arg-type]
    )
    return raw.headers.get("x-switchyard-cache"), raw.parse().data[0].embedding


async def _cache_metric(world: World, name: str, **labels: str) -> float:
    samples = await world.edge.metrics()
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_a_repeat_is_answered_from_the_cache_within_its_tenant_only(
    world: World, calls: list[pb.EmbedRequest]
) -> None:
    text = f"cached {uuid.uuid4().hex}"
    hits = {"model": EMBED, "route": "embeddings", "result": "hit"}
    hits_before = await _cache_metric(world, "switchyard_edge_cache_lookups_total", **hits)
    saved = {"model": EMBED, "kind": "prompt"}
    saved_before = await _cache_metric(world, "switchyard_edge_cache_saved_tokens_total", **saved)

    assert await _create(world, "alpha-1", text) == ("miss", expected(text))
    assert len(calls) == 1
    # Fresh encodings of the kept answer: float or base64, for any key of the tenant.
    assert await _create(world, "alpha-1", text, encoding_format="float") == ("hit", expected(text))
    assert await _create(world, "alpha-2", text) == ("hit", expected(text))
    assert len(calls) == 1
    # Another tenant, other dimensions: other entries.
    assert await _create(world, "beta", text) == ("miss", expected(text))
    assert (await _create(world, "alpha-1", text, dimensions=8))[0] == "miss"
    assert len(calls) == 3

    hits_after = await _cache_metric(world, "switchyard_edge_cache_lookups_total", **hits)
    saved_after = await _cache_metric(world, "switchyard_edge_cache_saved_tokens_total", **saved)
    assert hits_after - hits_before == 2
    assert saved_after - saved_before == 2 * len(_tokens(text))


async def test_a_hit_is_recorded_as_one_with_the_tokens_it_saved(world: World) -> None:
    text = f"recorded {uuid.uuid4().hex}"
    await _create(world, "alpha-1", text)
    request_id = uuid.uuid4().hex
    body = {"model": EMBED, "input": text}
    response = await _post(world, body, "alpha-1", **{"x-request-id": request_id})
    assert response.headers["x-switchyard-cache"] == "hit"
    record = await world.edge.record(request_id)
    assert (record["cache"], record["prompt_tokens"]) == ("hit", len(_tokens(text)))
    assert response.json()["usage"]["prompt_tokens"] == len(_tokens(text))


async def test_what_may_not_be_cached_says_nothing_and_reaches_the_backend(
    world: World, calls: list[pb.EmbedRequest]
) -> None:
    text = f"uncached {uuid.uuid4().hex}"
    body = {"model": EMBED, "input": text}
    for key, headers in [
        ("full", {}),  # a key opted out (`cache: false`)
        ("full", {}),
        ("alpha-1", {"cache-control": "no-store"}),
        ("alpha-1", {"cache-control": "max-age=0, no-cache"}),
    ]:
        response = await _post(world, body, key, **headers)
        assert response.status_code == 200
        assert "x-switchyard-cache" not in response.headers
    assert len(calls) == 4


async def test_errors_are_never_kept(world: World, calls: list[pb.EmbedRequest]) -> None:
    body = {"model": EMBED, "input": ["fine", ""]}
    for _ in range(2):
        response = await _post(world, body, "beta")
        assert response.status_code == 400
        assert response.headers["x-switchyard-cache"] == "miss"
    assert len(calls) == 2


async def test_the_openapi_document_describes_the_route(world: World) -> None:
    async with httpx.AsyncClient(base_url=world.edge.url, timeout=30) as client:
        spec = (await client.get("/openapi.json")).json()
    operation = spec["paths"][PATH]["post"]
    body = operation["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/EmbeddingRequest"}
    schema = spec["components"]["schemas"]["EmbeddingRequest"]
    assert set(schema["required"]) == {"model", "input"}
    assert schema["properties"]["encoding_format"]["anyOf"][0]["enum"] == ["float", "base64"]
    assert {"200", "400", "404", "429"} <= operation["responses"].keys()
