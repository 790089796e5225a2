"""`python -m switchyard.adapter_tgi`: the TGI adapter (settings from `ADAPTER_*`)."""

from switchyard.adapter.main import run
from switchyard.adapter_tgi.translation import TgiTranslation


def main() -> None:
    """The `switchyard-adapter-tgi` command (the image's entrypoint)."""
    run(TgiTranslation)


if __name__ == "__main__":
    main()
