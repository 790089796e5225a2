"""Batched `/generate`: a list of prompts is one request of several (SGLang's `select()`
sends them), answered with a list, or streamed with each event's prompt `index`."""

from __future__ import annotations

import re
from typing import Any

import httpx

from switchyard.enginesim import tokenizer
from tests.enginesim.sglang.conftest import asgi, engine_of, events, make_app
from tests.support.polling import eventually

PROMPTS = ["The yard at dawn", "A freight train", "Signals turn green"]
HEX_RID = re.compile(r"[0-9a-f]{32}")


async def generate(client: httpx.AsyncClient, **body: Any) -> httpx.Response:
    return await client.post("/generate", json=body)


def _meta(out: dict[str, Any]) -> dict[str, Any]:
    meta: dict[str, Any] = out["meta_info"]
    return meta


async def test_a_list_of_texts_is_answered_with_a_list_in_prompt_order(
    client: httpx.AsyncClient,
) -> None:
    params = {"max_new_tokens": 4, "ignore_eos": True}
    response = await generate(client, text=PROMPTS, rid="b", sampling_params=params)
    assert response.status_code == 200
    outs = response.json()
    assert isinstance(outs, list)
    assert len(outs) == 3
    for i, out in enumerate(outs):
        assert set(out) == {"text", "output_ids", "meta_info"}
        assert _meta(out)["id"] == f"b_{i}"  # one rid string: `<rid>_<i>`
        assert _meta(out)["prompt_tokens"] == tokenizer.count(PROMPTS[i])
        assert _meta(out)["finish_reason"] == {"type": "length", "length": 4}
    single = (await generate(client, text=PROMPTS[1], sampling_params=params)).json()
    assert isinstance(single, dict)
    assert outs[1]["text"] == single["text"]  # the same prompt, the same (seeded) output


async def test_rids_and_sampling_params_per_prompt(client: httpx.AsyncClient) -> None:
    per_prompt = [{"max_new_tokens": n, "ignore_eos": True} for n in (1, 2, 3)]
    outs = (
        await generate(client, text=PROMPTS, rid=["x", "y", "z"], sampling_params=per_prompt)
    ).json()
    assert [_meta(o)["id"] for o in outs] == ["x", "y", "z"]
    assert [_meta(o)["completion_tokens"] for o in outs] == [1, 2, 3]
    fresh = (await generate(client, text=PROMPTS[:2], sampling_params=per_prompt[0])).json()
    rids = [_meta(o)["id"] for o in fresh]
    assert all(HEX_RID.fullmatch(r) for r in rids)
    assert rids[0] != rids[1]


async def test_token_id_lists_are_a_batch_too(client: httpx.AsyncClient) -> None:
    ids = [tokenizer.encode(p) for p in PROMPTS[:2]]
    outs = (await generate(client, input_ids=ids, sampling_params={"max_new_tokens": 2})).json()
    assert [_meta(o)["prompt_tokens"] for o in outs] == [len(i) for i in ids]


async def test_an_empty_batch_is_an_empty_list(client: httpx.AsyncClient) -> None:
    assert (await generate(client, text=[])).json() == []


async def test_a_streamed_batch_interleaves_cumulative_outputs_with_their_index(
    client: httpx.AsyncClient,
) -> None:
    params = {"max_new_tokens": 5, "ignore_eos": True}
    response = await generate(
        client, text=PROMPTS[:2], rid="s", sampling_params=params, stream=True
    )
    assert response.status_code == 200
    outs = events(response.text)
    assert {o["index"] for o in outs} == {0, 1}
    whole = (await generate(client, text=PROMPTS[:2], sampling_params=params)).json()
    for index in (0, 1):
        mine = [o for o in outs if o["index"] == index]
        assert all(_meta(o)["id"] == f"s_{index}" for o in mine)
        previous = ""
        for out in mine:  # cumulative, per prompt
            assert out["text"].startswith(previous)
            previous = out["text"]
        assert _meta(mine[-1])["finish_reason"] == {"type": "length", "length": 5}
        assert all(_meta(o)["finish_reason"] is None for o in mine[:-1])
        assert mine[-1]["text"] == whole[index]["text"]
        assert mine[-1]["output_ids"] == whole[index]["output_ids"]


async def test_batch_errors(client: httpx.AsyncClient) -> None:
    response = await generate(client, text=PROMPTS, rid=["a", "b"])
    assert (response.status_code, response.json()) == (
        400,
        {
            "error": {
                "message": "The specified rids length mismatch with the batch_size for batch processing."
            }
        },
    )
    response = await generate(client, text=PROMPTS[:2], rid=["a", "a"])
    assert response.json() == {
        "error": {"message": "Duplicate request IDs detected within the request: ['a']"}
    }
    # A prompt that does not fit refuses the whole batch; the prompts before it are aborted.
    response = await generate(
        client, text=["fine", " ".join(["word"] * 1100)], sampling_params={"max_new_tokens": 2}
    )
    assert response.status_code == 400
    assert "longer than the model's context length" in response.json()["error"]["message"]
    streamed = await generate(client, text=PROMPTS, rid=["a", "b"], stream=True)
    assert events(streamed.text)[0]["error"]["code"] == 400


async def test_a_refused_batch_leaves_nothing_held() -> None:
    app = make_app()
    engine = engine_of(app)
    async with asgi(app) as client:
        await generate(client, text=["fine", " ".join(["word"] * 1100)], rid=["r0", "r1"])
        await eventually(lambda: engine.live_rids == ())  # r0 had started: it is aborted
        outs = (await generate(client, text=["a", "b"], rid=["r0", "r1"])).json()
    assert [_meta(o)["id"] for o in outs] == ["r0", "r1"]
    assert [(a.rid, a.source) for a in engine.aborts] == [("r0", "failure")]
