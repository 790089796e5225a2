"""The settings base every service's one settings class derives from (pydantic-settings)."""

from __future__ import annotations

from typing import TypeVar

from pydantic import SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from switchyard.servicekit.logs import LogFormat


class ServiceSettings(BaseSettings):
    """Fields every service has. Subclasses set `env_prefix` (e.g. `EDGE_`)."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True, validate_default=True)

    log_level: str = "INFO"
    log_format: LogFormat = "auto"


S = TypeVar("S", bound=BaseSettings)


def describe_errors(cls: type[BaseSettings], error: ValidationError) -> list[str]:
    """One line per bad value, named as its environment variable; secret values are never echoed."""
    prefix = str(cls.model_config.get("env_prefix", ""))
    lines = []
    for err in error.errors():
        field = str(err["loc"][0]) if err["loc"] else ""
        name = (prefix + ".".join(str(p) for p in err["loc"])).upper()
        info = cls.model_fields.get(field)
        secret = info is not None and info.annotation in (SecretStr, SecretStr | None)
        shown = "" if secret or err["type"] == "missing" else f" (got {err['input']!r})"
        lines.append(f"{name}: {err['msg']}{shown}")
    return lines


def load_settings(cls: type[S]) -> S:
    """Read settings from the environment, or exit with a clear message for each bad value."""
    try:
        return cls()
    except ValidationError as error:
        raise SystemExit(
            "invalid configuration:\n  " + "\n  ".join(describe_errors(cls, error))
        ) from None
