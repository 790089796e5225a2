"""Completions: determinism, lengths, EOS, stop strings and constraints."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import jsonschema
import pytest
from hypothesis import given
from hypothesis import strategies as st

from switchyard.enginesim import tokenizer
from switchyard.enginesim.generation import (
    Generation,
    SamplingParams,
    choice_params,
    generate,
    generate_n,
    rng,
)
from switchyard.enginesim.structured import Constraint

PROMPT = "<|im_start|>user\nTell me a story.<|im_end|>\n<|im_start|>assistant\n"


def _gen(
    params: SamplingParams, prompt: str = PROMPT, *, default_max_tokens: int = 1000,
    default_seed: int | None = None,
) -> Generation:  # fmt: skip
    return generate(
        prompt, params, default_max_tokens=default_max_tokens, default_seed=default_seed
    )


def test_free_text_is_sentences_of_single_tokens_ended_by_eos() -> None:
    for seed in range(10):
        g = _gen(SamplingParams(seed=seed))
        assert list(g.tokens) == tokenizer.tokens(g.text)  # each piece is one token
        assert g.finish_reason == "stop"
        assert g.matched_stop is None
        assert g.eos
        assert g.completion_tokens == len(g.tokens) + 1  # EOS counts, as in engines
        assert len(g.tokens) >= 8
        assert g.text[-1] in ".!?"
        assert tokenizer.decode(g.token_ids) == g.text


def test_greedy_depends_on_the_prompt_only() -> None:
    a = _gen(SamplingParams(temperature=0, seed=1))
    assert a == _gen(SamplingParams(temperature=0, seed=2, top_p=0.5))
    assert a != _gen(SamplingParams(temperature=0), prompt=PROMPT + " ")


def test_seeded_is_reproducible_and_seed_dependent() -> None:
    assert _gen(SamplingParams(seed=5)) == _gen(SamplingParams(seed=5))
    assert _gen(SamplingParams(seed=5)) != _gen(SamplingParams(seed=6))
    assert _gen(SamplingParams(seed=5)) != _gen(SamplingParams(seed=5, temperature=0.7))


def test_unseeded_is_fresh_unless_the_simulator_has_a_seed() -> None:
    assert _gen(SamplingParams()).text != _gen(SamplingParams()).text
    assert _gen(SamplingParams(), default_seed=3) == _gen(SamplingParams(), default_seed=3)
    assert _gen(SamplingParams(), default_seed=3) == _gen(SamplingParams(seed=3))


def test_max_tokens_cuts_with_finish_length_keeping_the_same_prefix() -> None:
    full = _gen(SamplingParams(seed=1))
    short = _gen(SamplingParams(seed=1, max_tokens=5))
    assert short.finish_reason == "length"
    assert short.matched_stop is None
    assert not short.eos
    assert short.tokens == full.tokens[:5]
    assert short.completion_tokens == 5


def test_default_max_tokens_applies_when_none_is_given() -> None:
    g = _gen(SamplingParams(seed=1), default_max_tokens=3)
    assert len(g.tokens) == 3
    assert g.finish_reason == "length"


def test_zero_max_tokens() -> None:
    g = _gen(SamplingParams(seed=1, max_tokens=0))
    assert g.tokens == ()
    assert g.finish_reason == "length"
    assert g.completion_tokens == 0


def test_ignore_eos_runs_to_max_tokens_extending_the_same_text() -> None:
    natural = _gen(SamplingParams(seed=2))
    g = _gen(SamplingParams(seed=2, ignore_eos=True, max_tokens=500))
    assert len(g.tokens) == 500
    assert g.finish_reason == "length"
    assert g.tokens[: len(natural.tokens)] == natural.tokens


def test_min_tokens_postpones_eos() -> None:
    for seed in range(5):
        g = _gen(SamplingParams(seed=seed, min_tokens=300))
        assert len(g.tokens) >= 300
        assert g.eos


def test_a_stop_string_ends_the_text_before_it() -> None:
    base = _gen(SamplingParams(seed=4, ignore_eos=True, max_tokens=60))
    stop = base.text[100:109]  # nine characters, likely across token boundaries
    g = _gen(SamplingParams(seed=4, ignore_eos=True, max_tokens=60, stop=("never there", stop)))
    start = base.text.index(stop)
    assert g.text == base.text[:start]
    assert g.finish_reason == "stop"
    assert g.matched_stop == stop
    assert not g.eos
    # Whole tokens, then the part of the last token before the stop, with its token's id.
    assert g.token_ids == base.token_ids[: len(g.tokens)]
    assert g.tokens[:-1] == base.tokens[: len(g.tokens) - 1]
    assert base.tokens[len(g.tokens) - 1].startswith(g.tokens[-1])
    ends = [len("".join(base.tokens[: i + 1])) for i in range(len(base.tokens))]
    assert g.completion_tokens == next(i for i, e in enumerate(ends) if e >= start + len(stop)) + 1


@given(seed=st.integers(0, 2**32), start=st.integers(0, 150), length=st.integers(1, 12))
def test_stop_cutting_invariants(seed: int, start: int, length: int) -> None:
    base = _gen(SamplingParams(seed=seed, ignore_eos=True, max_tokens=40))
    stop = base.text[start : start + length] or "."
    g = _gen(SamplingParams(seed=seed, ignore_eos=True, max_tokens=40, stop=(stop,)))
    if stop not in base.text:
        assert g == base
        return
    assert g.text == base.text[: base.text.index(stop)]
    assert g.matched_stop == stop
    assert len(g.tokens) == len(g.token_ids) <= g.completion_tokens <= 40
    assert g.token_ids == base.token_ids[: len(g.tokens)]
    pieces = zip(g.tokens, g.token_ids, strict=True)
    assert all(t and tokenizer.token_text(i).startswith(t) for t, i in pieces)


def test_the_stop_string_completed_first_wins() -> None:
    base = _gen(SamplingParams(seed=4, ignore_eos=True, max_tokens=60))
    early, late = base.text[40:45], base.text[10:60]
    g = _gen(SamplingParams(seed=4, ignore_eos=True, max_tokens=60, stop=(late, early)))
    assert g.matched_stop == early
    assert g.text == base.text[: base.text.index(early)]


def test_a_stop_string_beyond_max_tokens_does_not_count() -> None:
    base = _gen(SamplingParams(seed=4, ignore_eos=True, max_tokens=60))
    g = _gen(SamplingParams(seed=4, max_tokens=10, stop=("".join(base.tokens[30:33]),)))
    assert g.finish_reason == "length"
    assert g.tokens == base.tokens[:10]


def test_constrained_output_is_the_whole_text_then_eos() -> None:
    g = _gen(SamplingParams(seed=1, constraint=Constraint("regex", r"[a-z]{4}-\d{3}")))
    assert re.fullmatch(r"[a-z]{4}-\d{3}", g.text)
    assert g.eos
    assert g.completion_tokens == len(g.tokens) + 1
    assert g.tokens == tuple(tokenizer.tokens(g.text))


def test_constrained_json_validates_and_truncates_like_an_engine() -> None:
    schema = {
        "type": "object",
        "properties": {"tags": {"type": "array", "items": {"type": "string"}, "minItems": 2}},
        "required": ["tags"],
    }
    params = SamplingParams(temperature=0, constraint=Constraint("json_schema", schema))
    full = _gen(params)
    jsonschema.validate(json.loads(full.text), schema)
    cut = _gen(SamplingParams(temperature=0, max_tokens=3, constraint=params.constraint))
    assert cut.finish_reason == "length"
    assert cut.tokens == full.tokens[:3]


@pytest.mark.parametrize(
    "params",
    [
        {"max_tokens": -1},
        {"temperature": -0.1},
        {"top_p": 0},
        {"top_p": 1.5},
        {"min_tokens": -2},
    ],
)
def test_bad_sampling_params_are_refused(params: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=next(iter(params))):
        SamplingParams(**params)  # type: ignore[arg-type]


_SCRIPT = """
import json
from switchyard.enginesim.generation import SamplingParams, generate
from switchyard.enginesim.structured import Constraint
cases = [
    SamplingParams(temperature=0),
    SamplingParams(seed=11, stop=("e",)),
    SamplingParams(seed=3, constraint=Constraint("regex", r"[^a-z]{6}\\W\\s")),
    SamplingParams(seed=3, constraint=Constraint("grammar", 'root ::= [^0-9]{5} ("a" | "b")+')),
    SamplingParams(seed=3, constraint=Constraint("json_schema", {"type": "object", "minProperties": 2})),
]
out = [generate("hello", p, default_max_tokens=50) for p in cases]
print(json.dumps([[list(g.tokens), g.token_ids, g.finish_reason] for g in out]))
"""


def test_outputs_and_ids_are_the_same_in_other_processes() -> None:
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _SCRIPT],
            env={**os.environ, "PYTHONHASHSEED": hash_seed},
            stdout=subprocess.PIPE,
            text=True,
        )
        for hash_seed in ("1", "2")  # str hashes differ between the two
    ]
    outputs = [json.loads(child.communicate(timeout=60)[0]) for child in children]
    here: dict[str, object] = {}
    exec(_SCRIPT.replace("print(", "result = ("), here)
    assert outputs[0] == outputs[1] == json.loads(str(here["result"]))


# --- preamble (reasoning), script (tool calls), n choices ------------------------------------


def test_a_preamble_comes_first_and_counts() -> None:
    plain = _gen(SamplingParams(temperature=0))
    thinking = generate(
        PROMPT, SamplingParams(temperature=0), default_max_tokens=1000,
        preamble="<think>Think first.</think>",
    )  # fmt: skip
    assert thinking.text.startswith("<think>Think first.</think>")
    assert thinking.preamble_tokens == len(tokenizer.tokens("<think>Think first.</think>"))
    assert thinking.eos
    assert plain.preamble_tokens == 0
    assert thinking.completion_tokens > thinking.preamble_tokens


def test_a_script_replaces_the_text_then_ends() -> None:
    g = generate(
        PROMPT, SamplingParams(seed=1), default_max_tokens=1000, preamble="<think>x</think>",
        script="<tool_call>\n{}\n</tool_call>",
    )  # fmt: skip
    assert g.text == "<think>x</think><tool_call>\n{}\n</tool_call>"
    assert g.eos
    assert g.completion_tokens == len(g.tokens) + 1


def test_a_script_is_cut_by_the_output_limit_and_stop_strings() -> None:
    script = "<tool_call>\n" + '{"name": "f", "arguments": {}}' + "\n</tool_call>"
    short = generate(PROMPT, SamplingParams(max_tokens=3), default_max_tokens=1, script=script)
    assert short.finish_reason == "length"
    assert len(short.tokens) == 3
    stopped = generate(PROMPT, SamplingParams(stop=("name",)), default_max_tokens=99, script=script)
    assert stopped.matched_stop == "name"
    assert "name" not in stopped.text


def test_n_choices_are_seeded_apart() -> None:
    params = SamplingParams(seed=5, max_tokens=30)
    choices = generate_n(PROMPT, params, 3, default_max_tokens=1000)
    assert choices[0] == _gen(params)
    assert choices[1] == _gen(choice_params(params, 1))
    assert len({c.text for c in choices}) == 3
    assert generate_n(PROMPT, params, 3, default_max_tokens=1000) == choices
    greedy = generate_n(PROMPT, SamplingParams(temperature=0), 2, default_max_tokens=1000)
    assert greedy[0] == greedy[1]


def test_rng_follows_the_output_seeding() -> None:
    params = SamplingParams(seed=9)
    assert rng(PROMPT, params, salt="a").random() == rng(PROMPT, params, salt="a").random()
    assert rng(PROMPT, params, salt="a").random() != rng(PROMPT, params, salt="b").random()


@pytest.mark.parametrize("seed", range(20))
def test_a_model_that_reasoned_at_length_still_answers(seed: int) -> None:
    """The answer's length is drawn apart from the reasoning's: however long the reasoning,
    a text answer follows (before, a reasoning longer than the drawn length left none)."""
    reasoning = "<think>" + " ".join(["thought"] * 300) + "</think>"  # past any drawn length
    out = generate(
        PROMPT, SamplingParams(seed=seed), default_max_tokens=100_000, preamble=reasoning
    )
    assert out.finish_reason == "stop"
    assert out.completion_tokens > out.preamble_tokens + 1  # some answer, then EOS
