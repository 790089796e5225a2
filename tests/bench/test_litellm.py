"""LiteLLM's proxy config as the bench writes it (no proxy started)."""

from __future__ import annotations

from pathlib import Path

import yaml

from switchyard.bench import litellm


def test_embedding_models_are_marked_and_every_model_goes_to_its_simulator(
    tmp_path: Path,
) -> None:
    config = tmp_path / "litellm.yaml"
    models = {"bench-zero": "http://127.0.0.1:1", "bench-embed": "http://127.0.0.1:2"}
    litellm.write_config(config, models, embeddings={"bench-embed"})
    entries = {e["model_name"]: e for e in yaml.safe_load(config.read_text())["model_list"]}
    assert entries["bench-embed"]["litellm_params"] == {
        "model": "hosted_vllm/bench-embed",
        "api_base": "http://127.0.0.1:2/v1",
        "api_key": "unused",
    }
    assert entries["bench-embed"]["model_info"] == {"mode": "embedding"}
    assert "model_info" not in entries["bench-zero"]
    assert entries["bench-zero"]["litellm_params"]["api_base"] == "http://127.0.0.1:1/v1"
