"""The command line: SGLang's flags and defaults; GPU-only flags accepted; others refused."""

from __future__ import annotations

import pytest

from switchyard.enginesim.sglang.flags import DEFAULT_MAX_RUNNING, MODEL_CONTEXT_LENGTH, parse


def test_defaults_are_sglangs() -> None:
    args = parse(["--model-path", "org/model"])
    assert (args.host, args.port) == ("127.0.0.1", 30000)
    assert args.served_model_name == "org/model"
    assert args.context_length == MODEL_CONTEXT_LENGTH
    assert not args.context_length_set
    assert args.max_queued_requests is None  # an unbounded queue
    assert args.max_running_requests == DEFAULT_MAX_RUNNING
    assert args.max_total_tokens == MODEL_CONTEXT_LENGTH * DEFAULT_MAX_RUNNING
    assert not args.enable_metrics
    assert not args.incremental_streaming_output
    assert not args.allow_auto_truncate


def test_the_flags_a_launch_server_command_line_uses() -> None:
    args = parse(
        [
            "--model-path", "org/model", "--served-model-name", "demo", "--host", "0.0.0.0",
            "--port", "8000", "--context-length", "2048", "--max-running-requests", "4",
            "--max-queued-requests", "0", "--enable-metrics", "--incremental-streaming-output",
            "--allow-auto-truncate", "--enable-trace", "--tp-size", "2",
            "--mem-fraction-static", "0.8", "--sim-load-delay", "1", "--sim-seed", "7",
        ]
    )  # fmt: skip
    assert (args.served_model_name, args.host, args.port) == ("demo", "0.0.0.0", 8000)
    assert (args.context_length, args.context_length_set) == (2048, True)
    assert (args.max_running_requests, args.max_queued_requests) == (4, 0)
    assert args.enable_metrics
    assert args.incremental_streaming_output
    assert args.allow_auto_truncate
    assert (args.tp_size, args.mem_fraction_static) == (2, 0.8)
    assert (args.sim.latency.load_delay_s, args.sim.seed) == (1.0, 7)


def test_the_chat_feature_flags() -> None:
    args = parse(
        [
            "--model-path", "m", "--tool-call-parser", "qwen25", "--reasoning-parser",
            "deepseek-r1", "--chat-template", "t.jinja", "--enable-multimodal",
            "--limit-mm-data-per-request", '{"image": 2}', "--sim-multimodal",
        ]
    )  # fmt: skip
    assert (args.tool_call_parser, args.reasoning_parser) == ("qwen25", "deepseek-r1")
    assert args.limit_mm_data_per_request == {"image": 2}
    assert args.multimodal
    plain = parse(["--model-path", "m", "--enable-multimodal"])
    assert (plain.tool_call_parser, plain.reasoning_parser, plain.multimodal) == (None, None, False)


@pytest.mark.parametrize(
    "argv",
    [
        [],  # --model-path is required
        ["--model-path", "m", "--no-such-flag"],
        ["--model-path", "m", "--context-length", "0"],
        ["--model-path", "m", "--max-queued-requests", "-1"],
        ["--model-path", "m", "--port", "70000"],
        # SGLang's parsers for other models' formats: the simulated model writes Qwen's.
        ["--model-path", "m", "--tool-call-parser", "mistral"],
        ["--model-path", "m", "--reasoning-parser", "gpt-oss"],
        ["--model-path", "m", "--limit-mm-data-per-request", '{"picture": 1}'],
        ["--model-path", "m", "--limit-mm-data-per-request", "2"],
    ],
)
def test_bad_command_lines_are_refused(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        parse(argv)
