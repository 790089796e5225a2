"""What the simulated TGI generates: stop sequences, EOS, lengths, grammars, seeds."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import jsonschema
import pytest

from switchyard.enginesim import tokenizer
from switchyard.enginesim.generation import SamplingParams, generate
from switchyard.enginesim.tgi.engine import apply_stopping

PROMPT = "The token at night"


async def _generate(client: httpx.AsyncClient, **parameters: Any) -> dict[str, Any]:
    response = await client.post(
        "/generate", json={"inputs": PROMPT, "parameters": {"details": True, **parameters}}
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _word_after_the_start(text: str) -> str:
    for match in re.finditer(r"(?<= )([a-z]{4,})\b", text):
        if text.find(match.group(1)) == match.start() and match.start() > 10:
            return match.group(1)
    raise AssertionError(f"no usable word in {text!r}")


async def test_a_stop_sequence_ends_the_output_and_stays_in_it(client: httpx.AsyncClient) -> None:
    free = await _generate(client, max_new_tokens=200, seed=9, do_sample=True)
    word = _word_after_the_start(free["generated_text"])
    stopped = await _generate(
        client, max_new_tokens=200, seed=9, do_sample=True, stop=["zzz", word]
    )
    text = stopped["generated_text"]
    assert stopped["details"]["finish_reason"] == "stop_sequence"
    assert text.endswith(word)  # included, unlike vLLM or SGLang
    assert text == free["generated_text"][: free["generated_text"].index(word) + len(word)]
    assert stopped["details"]["generated_tokens"] == len(stopped["details"]["tokens"])


async def test_a_stop_sequence_inside_a_token_is_not_seen(client: httpx.AsyncClient) -> None:
    # End-anchored after each token: a stop that no token completes never matches.
    free = await _generate(client, max_new_tokens=40, seed=9, do_sample=True)
    word = _word_after_the_start(free["generated_text"])
    inner = word[1:3]
    tokens = [t["text"] for t in free["details"]["tokens"]]
    if any(t.endswith(inner) for t in tokens):
        pytest.skip("this stop happens to end a token")
    stopped = await _generate(client, max_new_tokens=40, seed=9, do_sample=True, stop=[inner])
    assert stopped["generated_text"] == free["generated_text"]
    assert stopped["details"]["finish_reason"] == free["details"]["finish_reason"]


async def test_eos_is_a_special_last_token_outside_the_text(client: httpx.AsyncClient) -> None:
    body = await _generate(client, max_new_tokens=200, seed=3, do_sample=True)
    details = body["details"]
    assert details["finish_reason"] == "eos_token"
    last = details["tokens"][-1]
    assert (last["id"], last["text"], last["special"]) == (2, "</s>", True)
    assert body["generated_text"] == "".join(t["text"] for t in details["tokens"][:-1])
    assert details["generated_tokens"] == len(details["tokens"])


async def test_max_new_tokens_gives_length(client: httpx.AsyncClient) -> None:
    body = await _generate(client, max_new_tokens=3, seed=3, do_sample=True)
    assert body["details"]["finish_reason"] == "length"
    assert body["details"]["generated_tokens"] == 3


def test_the_token_budget_is_checked_before_eos() -> None:
    natural = generate(PROMPT, SamplingParams(seed=5), default_max_tokens=500)
    n = len(natural.tokens) + 1  # EOS is the n-th token
    cut = generate(PROMPT, SamplingParams(seed=5, max_tokens=n), default_max_tokens=n)
    decoded = apply_stopping(cut, n, (), 0)
    assert decoded.finish_reason == "length"  # as TGI's StoppingCriteria: length first
    assert decoded.tokens[-1].special
    assert decoded.generated_tokens == n
    roomy = apply_stopping(natural, n + 1, (), 0)
    assert roomy.finish_reason == "eos_token"


def test_stopping_keeps_only_what_a_token_completes() -> None:
    base = generate(
        PROMPT, SamplingParams(seed=2, ignore_eos=True, max_tokens=30), default_max_tokens=30
    )
    third = "".join(base.tokens[:3])
    decoded = apply_stopping(base, 30, (third[-4:],), 0)
    assert decoded.finish_reason == "stop_sequence"
    assert decoded.text == third
    assert [t.text for t in decoded.tokens] == list(base.tokens[:3])


async def test_greedy_without_sampling_and_seeded_sampling(client: httpx.AsyncClient) -> None:
    a = await _generate(client, max_new_tokens=20)
    b = await _generate(client, max_new_tokens=20)
    assert a["generated_text"] == b["generated_text"]
    assert a["details"]["seed"] is None  # greedy: TGI reports no seed
    s1 = await _generate(client, max_new_tokens=20, do_sample=True, seed=42)
    s2 = await _generate(client, max_new_tokens=20, do_sample=True, seed=42)
    s3 = await _generate(client, max_new_tokens=20, do_sample=True, seed=43)
    assert s1 == s2
    assert s1["details"]["seed"] == 42
    assert s3["generated_text"] != s1["generated_text"]


async def test_without_parameters_the_router_samples(client: httpx.AsyncClient) -> None:
    # `default_parameters()` has do_sample: true, unlike an empty parameters object.
    texts = {
        (await client.post("/generate", json={"inputs": PROMPT})).json()["generated_text"]
        for _ in range(3)
    }
    assert len(texts) > 1


async def test_a_random_seed_is_reported_and_reproduces(client: httpx.AsyncClient) -> None:
    first = await _generate(client, max_new_tokens=15, do_sample=True)
    seed = first["details"]["seed"]
    assert isinstance(seed, int)
    again = await _generate(client, max_new_tokens=15, do_sample=True, seed=seed)
    assert again["generated_text"] == first["generated_text"]


async def test_stream_and_unary_agree(client: httpx.AsyncClient) -> None:
    unary = await _generate(client, max_new_tokens=30, do_sample=True, seed=8)
    body = {"inputs": PROMPT, "parameters": {"max_new_tokens": 30, "do_sample": True, "seed": 8}}
    streamed = await client.post("/generate_stream", json=body)
    last = json.loads(streamed.text.strip().split("\n\n")[-1][len("data:") :])
    assert last["generated_text"] == unary["generated_text"]


SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "n": {"type": "integer", "minimum": 3}},
    "required": ["name", "n"],
    "additionalProperties": False,
}


@pytest.mark.parametrize(
    "grammar",
    [
        {"type": "json", "value": SCHEMA},
        {"type": "json", "value": json.dumps(SCHEMA)},
        {"type": "json_object", "value": SCHEMA},
        {"type": "json_schema", "value": {"name": "thing", "schema": SCHEMA}},
    ],
)
async def test_json_grammars_conform(client: httpx.AsyncClient, grammar: dict[str, Any]) -> None:
    for seed in range(3):
        body = await _generate(client, grammar=grammar, seed=seed, do_sample=True)
        assert body["details"]["finish_reason"] == "eos_token"
        jsonschema.validate(json.loads(body["generated_text"]), SCHEMA)


async def test_regex_grammar_conforms(client: httpx.AsyncClient) -> None:
    pattern = r"(positive|negative|neu\(tral\))"
    seen = set()
    for seed in range(8):
        body = await _generate(
            client, grammar={"type": "regex", "value": pattern}, seed=seed, do_sample=True
        )
        assert re.fullmatch(pattern, body["generated_text"])
        seen.add(body["generated_text"])
    assert len(seen) > 1


async def test_return_full_text(client: httpx.AsyncClient) -> None:
    body = await _generate(client, max_new_tokens=4, return_full_text=True)
    assert body["generated_text"].startswith(PROMPT)


async def test_chat_reports_stop_for_eos_and_keeps_stop_sequence(client: httpx.AsyncClient) -> None:
    messages = [{"role": "user", "content": "Say something."}]
    free = (
        await client.post(
            "/v1/chat/completions", json={"messages": messages, "seed": 4, "max_tokens": 200}
        )
    ).json()
    assert free["choices"][0]["finish_reason"] == "stop"
    text = free["choices"][0]["message"]["content"]
    word = _word_after_the_start(text)
    body = {"messages": messages, "seed": 4, "max_tokens": 200, "stop": [word]}
    stopped = (await client.post("/v1/chat/completions", json=body)).json()
    assert stopped["choices"][0]["finish_reason"] == "stop_sequence"
    assert stopped["choices"][0]["message"]["content"] == text[: text.index(word) + len(word)]
    # The prompt is the chat template applied to the messages.
    rendered = "<|im_start|>user\nSay something.<|im_end|>\n<|im_start|>assistant\n"
    assert stopped["usage"]["prompt_tokens"] == tokenizer.count(rendered)


async def test_chat_temperature_zero_is_greedy(client: httpx.AsyncClient) -> None:
    body = {"messages": [{"role": "user", "content": "Hi"}], "temperature": 0, "max_tokens": 20}
    a = (await client.post("/v1/chat/completions", json=body)).json()
    b = (await client.post("/v1/chat/completions", json=body)).json()
    assert a["choices"][0]["message"] == b["choices"][0]["message"]


# outlines-core reads `properties` before anything else: listed keys only, nothing more.
_ONLY_LISTED = [
    ({"type": "object", "properties": {}}, set()),
    ({"type": "object", "properties": {}, "additionalProperties": True}, set()),
    (
        {"properties": {"a": {"type": "integer"}}, "minProperties": 2, "required": ["a", "z"]},
        {"a"},
    ),
    (
        {"type": "object", "properties": {"in": {"type": "object", "properties": {}}}},
        {"in"},
    ),
]


@pytest.mark.parametrize(("schema", "keys"), _ONLY_LISTED)
async def test_json_grammars_admit_only_the_listed_properties(
    client: httpx.AsyncClient, schema: dict[str, Any], keys: set[str]
) -> None:
    grammar = {"type": "json", "value": schema}
    for seed in range(6):
        body = await _generate(client, grammar=grammar, seed=seed, do_sample=True)
        document = json.loads(body["generated_text"])
        assert isinstance(document, dict)
        assert set(document) <= keys, document
        if "in" in document:
            assert document["in"] == {}
        if "a" in schema.get("required", []):
            assert "a" in document


async def test_a_schema_node_outlines_cannot_read_is_refused(client: httpx.AsyncClient) -> None:
    value = {"type": "object", "properties": {"a": {"description": "anything"}}}
    body = {"inputs": PROMPT, "parameters": {"grammar": {"type": "json", "value": value}}}
    response = await client.post("/generate", json=body)
    assert response.status_code == 422
    assert response.json()["error"].startswith(
        "Input validation error: cannot compile regex from schema: "
        'Unsupported JSON Schema structure {"description":"anything"} \nMake sure it is valid'
    )


async def test_a_regex_grammar_can_write_any_object(client: httpx.AsyncClient) -> None:
    # What JSON mode needs on TGI: a regex, not a schema (a small one here).
    # Numbers without leading zeros: every full match is JSON, whatever the draw.
    number = "(0|[1-9][0-9]{0,2})"
    pattern = rf'\{{( ?"[a-z]{{1,8}}": ?({number}|true|null)(, ?"[a-z]{{1,8}}": ?{number})*)? ?\}}'
    grammar = {"type": "regex", "value": pattern}
    documents = []
    for seed in range(6):
        body = await _generate(client, grammar=grammar, seed=seed, do_sample=True)
        assert re.fullmatch(pattern, body["generated_text"])
        documents.append(json.loads(body["generated_text"]))
    assert all(isinstance(d, dict) for d in documents)
    assert any(d for d in documents), "some objects have keys"


async def test_any_warper_makes_the_shard_sample(client: httpx.AsyncClient) -> None:
    # `do_sample: false` is greedy only while no warper (top_p, top_k, ...) is on.
    greedy = [await _generate(client, max_new_tokens=30, seed=s) for s in range(3)]
    assert len({g["generated_text"] for g in greedy}) == 1
    assert all(g["details"]["seed"] is None for g in greedy)
    for warper in ({"top_p": 0.5}, {"top_k": 5}, {"typical_p": 0.5}):
        sampled = [await _generate(client, max_new_tokens=30, seed=s, **warper) for s in range(3)]
        assert len({s["generated_text"] for s in sampled}) > 1, warper
        assert [s["details"]["seed"] for s in sampled] == [0, 1, 2]


async def test_chat_temperature_zero_with_top_p_samples(client: httpx.AsyncClient) -> None:
    base = {"messages": [{"role": "user", "content": "Hi"}], "temperature": 0, "max_tokens": 30}
    texts = set()
    for seed in range(3):
        body = {**base, "top_p": 0.5, "seed": seed}
        out = (await client.post("/v1/chat/completions", json=body)).json()
        texts.add(out["choices"][0]["message"]["content"])
    assert len(texts) > 1
