"""Logprobs and `n` on `/generate` and `/v1/completions`, in SGLang's shapes."""

from __future__ import annotations

from typing import Any

import httpx

from tests.enginesim.sglang import shapes
from tests.enginesim.sglang.conftest import MODEL, asgi, events, make_app

GREEDY = {"temperature": 0, "max_new_tokens": 6}


async def generate(client: httpx.AsyncClient, **body: Any) -> httpx.Response:
    return await client.post("/generate", json={"text": "Once upon", **body})


async def test_generate_returns_logprob_triples_in_meta_info(client: httpx.AsyncClient) -> None:
    body = (
        await generate(client, sampling_params=GREEDY, return_logprob=True, top_logprobs_num=2)
    ).json()
    meta = body["meta_info"]
    output = meta["output_token_logprobs"]
    assert [token_id for _, token_id, _ in output] == body["output_ids"]
    assert all(logprob <= 0 and text is None for logprob, _, text in output)
    assert meta["output_token_logprobs_length"] == len(output) == meta["completion_tokens"]
    assert meta["input_token_logprobs"] == []
    assert meta["input_top_logprobs"] == []
    tops = meta["output_top_logprobs"]
    assert [len(top) for top in tops] == [2] * len(output)
    assert [top[0][1] for top in tops] == body["output_ids"]  # greedy: the chosen one first
    plain = (await generate(client, sampling_params=GREEDY, return_logprob=True)).json()
    assert "output_top_logprobs" not in plain["meta_info"]
    assert (
        (await generate(client, sampling_params=GREEDY))
        .json()["meta_info"]
        .keys()
        .isdisjoint({"output_token_logprobs", "input_token_logprobs"})
    )


async def test_generate_logprobs_of_the_prompt_and_their_texts(client: httpx.AsyncClient) -> None:
    body = (
        await generate(
            client, sampling_params=GREEDY, return_logprob=True, logprob_start_len=0,
            top_logprobs_num=1, return_text_in_logprobs=True,
        )
    ).json()  # fmt: skip
    inputs = body["meta_info"]["input_token_logprobs"]
    assert "".join(text for _, _, text in inputs) == "Once upon"
    assert inputs[0][0] is None
    assert all(lp <= 0 for lp, _, _ in inputs[1:])
    assert body["meta_info"]["input_top_logprobs"][0] is None
    assert all(text is not None for _, _, text in body["meta_info"]["output_token_logprobs"])
    too_far = await generate(client, return_logprob=True, logprob_start_len=50)
    assert too_far.status_code == 400
    assert too_far.json()["error"]["message"] == (
        "req.logprob_start_len=50 is higher than the number of input tokens "
        f"len(req.origin_input_ids)={len(inputs)}. Please use a smaller logprob_start_len."
    )


async def test_a_native_stream_repeats_logprobs_unless_incremental() -> None:
    request = {"sampling_params": GREEDY, "return_logprob": True, "stream": True}
    for flags, cumulative in (((), True), (("--incremental-streaming-output",), False)):
        async with asgi(make_app(*flags)) as client:
            chunks = events((await generate(client, **request)).text)
        lengths = [len(c["meta_info"]["output_token_logprobs"]) for c in chunks]
        totals = [c["meta_info"]["output_token_logprobs_length"] for c in chunks]
        assert totals == sorted(totals)
        assert totals[-1] == chunks[-1]["meta_info"]["completion_tokens"]
        assert lengths == totals if cumulative else sum(lengths) == totals[-1]


async def test_n_makes_a_batch_of_samples_with_fresh_rids(client: httpx.AsyncClient) -> None:
    params = {"temperature": 1.0, "max_new_tokens": 8, "n": 3}
    body = (await generate(client, rid="mine", sampling_params=params)).json()
    assert isinstance(body, list)
    assert len(body) == 3
    assert all(out["meta_info"]["id"] != "mine" for out in body)
    assert len({out["meta_info"]["id"] for out in body}) == 3
    chunks = events((await generate(client, sampling_params=params, stream=True)).text)
    assert {c["index"] for c in chunks} == {0, 1, 2}
    both = (await generate(client, text=["a", "b"], sampling_params=params)).json()
    assert len(both) == 6
    listed = await generate(client, sampling_params=params, return_logprob=[True])
    assert listed.json()["error"]["message"] == (
        "Cannot use list return_logprob with parallel_sample_num > 1"
    )


async def test_completions_logprobs_and_n(client: httpx.AsyncClient) -> None:
    request = {"model": MODEL, "prompt": "Once upon", "max_tokens": 5, "temperature": 0}
    body = (await client.post("/v1/completions", json={**request, "logprobs": 2})).json()
    shapes.completion_response(body)
    logprobs = body["choices"][0]["logprobs"]
    assert "".join(logprobs["tokens"]) == body["choices"][0]["text"]
    assert logprobs["text_offset"] == [-1] * 5
    assert all(len(top) == 2 and max(top.values()) <= 0 for top in logprobs["top_logprobs"])
    echoed = (
        await client.post("/v1/completions", json={**request, "logprobs": 1, "echo": True})
    ).json()
    shapes.completion_response(echoed, sdk=False)
    tokens = echoed["choices"][0]["logprobs"]["tokens"]
    assert "".join(tokens) == echoed["choices"][0]["text"]  # the prompt's tokens first
    assert echoed["choices"][0]["logprobs"]["token_logprobs"][0] is None
    stream = {**request, "logprobs": 0, "n": 2, "stream": True,
              "stream_options": {"include_usage": True}}  # fmt: skip
    chunks = events((await client.post("/v1/completions", json=stream)).text)
    for chunk in chunks:
        shapes.completion_chunk(chunk)
    assert {c["choices"][0]["index"] for c in chunks if c["choices"]} == {0, 1}
    assert all(
        c["choices"][0]["logprobs"]["top_logprobs"] == []
        for c in chunks
        if c["choices"] and c["choices"][0]["logprobs"]
    )
    two = (await client.post("/v1/completions", json={**request, "n": 2})).json()
    shapes.completion_response(two)
    assert [c["index"] for c in two["choices"]] == [0, 1]
    assert two["usage"]["completion_tokens"] == 10
    assert chunks[-1]["usage"]["completion_tokens"] == 10
