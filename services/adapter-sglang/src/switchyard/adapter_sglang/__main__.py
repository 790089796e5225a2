"""`python -m switchyard.adapter_sglang`: the SGLang adapter (settings from `ADAPTER_*`)."""

from switchyard.adapter.main import run
from switchyard.adapter_sglang.translation import SglangTranslation


def main() -> None:
    """The `switchyard-adapter-sglang` command (the image's entrypoint)."""
    run(SglangTranslation)


if __name__ == "__main__":
    main()
