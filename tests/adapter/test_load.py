"""Load reports read only the gauges they need from an engine's exposition."""

from __future__ import annotations

import pytest

from switchyard.adapter.load import engine_load, gauge_sums
from switchyard.adapter.translation import LoadMetrics

VLLM_PAGE = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m a"} 3.0
vllm:num_requests_running{engine="1",model_name="m a"} 2.0
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="m a"} 7.0
vllm:num_requests_waiting_by_reason{reason="capacity"} 99.0
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.25 1700000000000
vllm:e2e_request_latency_seconds_bucket{le="+Inf",model_name="m"} 1234.0
"""


def test_sums_over_label_sets_and_ignores_prefix_lookalikes() -> None:
    sums = gauge_sums(VLLM_PAGE, {"vllm:num_requests_running", "vllm:num_requests_waiting"})
    assert sums == {"vllm:num_requests_running": 5.0, "vllm:num_requests_waiting": 7.0}


def test_unlabelled_samples_and_timestamps() -> None:
    page = "tgi_queue_size 4\ntgi_batch_current_size 2 1700000000\ntgi_queue_size_other 9\n"
    assert gauge_sums(page, {"tgi_queue_size", "tgi_batch_current_size"}) == {
        "tgi_queue_size": 4.0,
        "tgi_batch_current_size": 2.0,
    }


def test_engine_load_with_kv_usage() -> None:
    load = engine_load(
        VLLM_PAGE,
        LoadMetrics(
            "vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc"
        ),
    )
    assert (load.running, load.waiting, load.kv_cache_usage) == (5, 7, 0.25)


def test_missing_metrics_read_as_idle_and_nan_is_ignored() -> None:
    load = engine_load("x NaN\n", LoadMetrics("x", "y", None))
    assert (load.running, load.waiting, load.kv_cache_usage) == (0, 0, None)


def test_kv_cache_use_is_the_mean_over_data_parallel_engines() -> None:
    """vLLM with data parallelism: one series per engine, each its own KV cache."""
    page = (
        'vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.2\n'
        'vllm:kv_cache_usage_perc{engine="1",model_name="m"} 0.6\n'
        'vllm:num_requests_running{engine="0",model_name="m"} 4\n'
        'vllm:num_requests_running{engine="1",model_name="m"} 6\n'
    )
    metrics = LoadMetrics(
        "vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc"
    )
    load = engine_load(page, metrics)
    assert load.running == 10
    assert load.kv_cache_usage == pytest.approx(0.4)
