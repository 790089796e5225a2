"""Token logprobs: deterministic, at most 0, distinct real tokens, greedy picks the top."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from switchyard.enginesim import tokenizer
from switchyard.enginesim.logprobs import logprobs, token_logprob

_ids = st.lists(
    st.sampled_from(tokenizer.encode("The quick model answers the question.")), min_size=1
)


@settings(max_examples=100, deadline=None)
@given(ids=_ids, top=st.integers(0, 20), greedy=st.booleans())
def test_invariants(ids: list[int], top: int, greedy: bool) -> None:
    out = logprobs(ids, top, greedy=greedy)
    assert [lp.token_id for lp in out] == ids
    for lp in out:
        assert lp.token == tokenizer.token_text(lp.token_id)
        assert lp.logprob <= 0
        assert len(lp.top) == top
        assert len({a.token_id for a in lp.top}) == top  # distinct
        assert [a.logprob for a in lp.top] == sorted((a.logprob for a in lp.top), reverse=True)
        assert all(a.logprob <= 0 for a in lp.top)
        assert all(not tokenizer.is_special(a.token_id) for a in lp.top)
        assert all(a.token == tokenizer.token_text(a.token_id) for a in lp.top)
        others = [a for a in lp.top if a.token_id != lp.token_id]
        assert math.exp(lp.logprob) + sum(math.exp(a.logprob) for a in others) <= 1 + 1e-6
        if greedy and top:
            assert lp.top[0].token_id == lp.token_id  # the chosen token is the most likely
            assert lp.top[0].logprob == lp.logprob


def test_deterministic() -> None:
    ids = tokenizer.encode("Hello world, hello again.")
    assert logprobs(ids, 5, greedy=True) == logprobs(ids, 5, greedy=True)
    assert (
        token_logprob(3, ids[3], 2, greedy=False, previous=ids[2])
        == logprobs(ids, 2, greedy=False)[3]
    )


def test_bytes_are_utf8() -> None:
    lp = token_logprob(0, tokenizer.token_id("é"), 0, greedy=True)
    assert lp.bytes == list("é".encode())
