"""skaffold.yaml: valid against skaffold's own schema (v4beta14), one artifact per image built
by the root Dockerfile, the chart deployed with the images it just built, profiles that
swap values files."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.support.workspace import (
    CHART,
    ROOT,
    skaffold,
    skaffold_artifacts,
    template_var,
)

SCHEMA = Path(__file__).with_name("data") / "skaffold-v4beta14.schema.json"


def releases(section: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = section["deploy"]["helm"]["releases"]
    return found


def test_validates_against_the_v4beta14_schema() -> None:
    if not SCHEMA.is_file():
        pytest.fail(f"{SCHEMA} is missing (the shared reference folder sits beside the repo)")
    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = sorted(validator.iter_errors(skaffold()), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)
    assert skaffold()["apiVersion"] == "skaffold/v4beta14"


def test_artifacts_build_from_an_existing_dockerfile() -> None:
    for image, artifact in skaffold_artifacts().items():
        context = ROOT / artifact.get("context", ".")
        assert context.is_dir(), image
        assert (context / artifact["docker"].get("dockerfile", "Dockerfile")).is_file(), image


def test_every_release_gets_every_built_image() -> None:
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    sections = [skaffold(), *skaffold()["profiles"]]
    for section in sections:
        for release in releases(section):
            assert Path(ROOT / release["chartPath"]) == CHART
            templates: dict[str, str] = release["setValueTemplates"]
            referenced = {
                m.group(1)
                for value in templates.values()
                for m in [re.search(r"\.(\w+)\}\}", value)]
                if m
            }
            assert referenced == {template_var(image) for image in skaffold_artifacts()}
            for key in templates:
                node: Any = defaults
                for part in key.split("."):
                    assert isinstance(node, dict), f"{key} is not a chart value"
                    assert part in node, f"{key} is not a chart value"
                    node = node[part]


def test_profiles_swap_values_files_only() -> None:
    profiles = {p["name"]: p for p in skaffold()["profiles"]}
    assert set(profiles) >= {"local", "gpu"}
    for name, profile in profiles.items():
        assert "patches" not in profile, f"{name}: no patches by list position"
        (release,) = releases(profile)
        assert release["valuesFiles"] == [f"charts/switchyard/values-{name}.yaml"]
        assert (ROOT / release["valuesFiles"][0]).is_file()
        base = dict(releases(skaffold())[0])
        base.pop("valuesFiles", None)
        mine = {k: v for k, v in release.items() if k != "valuesFiles"}
        assert mine == base, f"{name}: only the values files differ from the default release"


def test_make_dev_runs_the_local_profile() -> None:
    makefile = (ROOT / "Makefile").read_text()
    recipe = re.search(r"^dev:.*\n((?:\t.*\n)+)", makefile, re.M)
    assert recipe, "a `dev` target"
    assert "skaffold dev -p local" in recipe.group(1)
