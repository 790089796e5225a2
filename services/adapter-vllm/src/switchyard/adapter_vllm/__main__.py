"""`python -m switchyard.adapter_vllm`: the adapter in front of a vLLM engine."""

from switchyard.adapter.main import run
from switchyard.adapter_vllm.translation import VllmTranslation


def main() -> None:
    """The `switchyard-adapter-vllm` command (the image's entrypoint)."""
    run(VllmTranslation)


if __name__ == "__main__":
    main()
