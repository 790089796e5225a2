"""The ChatML template and its refusals."""

from __future__ import annotations

import pytest

from switchyard.enginesim.chat_template import render


def test_renders_chatml_with_a_generation_prompt() -> None:
    prompt = render([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}])
    assert prompt == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_without_a_generation_prompt() -> None:
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    assert render(messages, add_generation_prompt=False).endswith("Hello<|im_end|>\n")


def test_tool_messages_are_accepted() -> None:
    assert "<|im_start|>tool\n42<|im_end|>" in render([{"role": "tool", "content": "42"}])


@pytest.mark.parametrize(
    ("messages", "message"),
    [
        ([], "at least one message"),
        ([{"role": "robot", "content": "x"}], r"messages\[0\]: unknown role 'robot'"),
        ([{"content": "x"}], "unknown role None"),
        ([{"role": "user"}], r"messages\[0\]: content must be a string"),
    ],
)
def test_bad_messages_are_refused(messages: list[dict[str, str]], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        render(messages)


def test_tools_and_tool_calls_are_rendered() -> None:
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": {}}}
    calls = '<tool_call>\n{"name": "get_weather", "arguments": {}}\n</tool_call>'
    prompt = render(
        [
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": "", "tool_calls": calls},
            {"role": "tool", "content": "sunny"},
        ],
        tools=[tool],
    )
    assert prompt.startswith('<|im_start|>system\n# Tools\n<tools>\n{"type": "function"')
    assert f"<|im_start|>assistant\n{calls}<|im_end|>" in prompt
    assert prompt.endswith("<|im_start|>tool\nsunny<|im_end|>\n<|im_start|>assistant\n")
