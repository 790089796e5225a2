"""The toy tokenizer is lossless, its ids are stable and every id decodes exactly."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from switchyard.enginesim import tokenizer


@given(st.text())
def test_tokens_join_back_to_the_text(text: str) -> None:
    assert "".join(tokenizer.tokens(text)) == text


@given(st.text())
def test_ids_decode_to_the_text_and_count_matches(text: str) -> None:
    ids = tokenizer.encode(text)
    assert tokenizer.decode(ids) == text
    assert tokenizer.count(text) == len(ids) == len(tokenizer.tokens(text))
    assert all(0 <= i < tokenizer.VOCAB_SIZE for i in ids)


@given(st.text())
def test_every_token_has_its_own_id(text: str) -> None:
    for tok in tokenizer.tokens(text):
        assert tokenizer.token_text(tokenizer.token_id(tok)) == tok


def test_ids_are_fixed() -> None:
    # Ids are part of the simulated model: a change here changes every engine's output ids.
    assert tokenizer.encode("Hello, world!") == [908, 17, 1050, 6]
    assert tokenizer.encode("</s>") == [tokenizer.EOS_TOKEN_ID]
    assert tokenizer.encode("é") == [tokenizer.CHAR_BASE + ord("é")]


def test_common_words_are_single_tokens() -> None:
    assert tokenizer.tokens("I need help with my order.") == [
        "I", " need", " help", " with", " my", " order", ".",
    ]  # fmt: skip


def test_special_tokens_are_recognised_after_whitespace() -> None:
    text = "<|im_start|>user\nHi<|im_end|>\n <|im_start|>"
    assert tokenizer.tokens(text) == [
        "<|im_start|>", "user", "\n", "Hi", "<|im_end|>", "\n", " ", "<|im_start|>",
    ]  # fmt: skip


def test_decode_can_skip_special_tokens() -> None:
    ids = tokenizer.encode("<s>hi</s>")
    assert tokenizer.decode(ids) == "<s>hi</s>"
    assert tokenizer.decode(ids, skip_special=True) == "hi"
    assert tokenizer.is_special(tokenizer.EOS_TOKEN_ID)
    assert tokenizer.token_text(tokenizer.EOS_TOKEN_ID) == tokenizer.EOS_TOKEN


def test_out_of_range_ids_and_multi_token_strings_are_refused() -> None:
    with pytest.raises(ValueError, match="out of range"):
        tokenizer.decode([tokenizer.VOCAB_SIZE])
    with pytest.raises(ValueError, match="out of range"):
        tokenizer.token_text(-1)
    with pytest.raises(ValueError, match="not a single token"):
        tokenizer.token_id("qxz")
