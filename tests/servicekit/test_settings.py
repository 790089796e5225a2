"""Bad configuration is reported per variable, with secrets never echoed."""

from __future__ import annotations

import pytest
from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from switchyard.servicekit.settings import ServiceSettings, load_settings


class _Example(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="EXAMPLE_")
    port: int = Field(default=1, ge=1)
    password: SecretStr | None = None
    name: str


def test_each_bad_value_is_named_as_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXAMPLE_PORT", "zero")
    with pytest.raises(SystemExit) as caught:
        load_settings(_Example)
    message = str(caught.value)
    assert "EXAMPLE_PORT: Input should be a valid integer" in message
    assert "'zero'" in message
    assert "EXAMPLE_NAME: Field required" in message


def test_secret_values_are_not_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXAMPLE_NAME", "x")
    monkeypatch.setenv("EXAMPLE_PASSWORD", '{"not": "a string"}')
    monkeypatch.setenv("EXAMPLE_PORT", "0")
    with pytest.raises(SystemExit) as caught:
        load_settings(_Example)
    assert "EXAMPLE_PORT" in str(caught.value)


def test_good_values_load(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXAMPLE_NAME", "x")
    monkeypatch.setenv("EXAMPLE_PASSWORD", "hunter2")
    monkeypatch.setenv("EXAMPLE_LOG_FORMAT", "json")
    settings = load_settings(_Example)
    assert settings.password is not None
    assert settings.password.get_secret_value() == "hunter2"
    assert settings.log_format == "json"
