"""The run parameters cannot drift from the settings they override: the same names, the same types
(None added: not given) and the same constraints, and their help is the settings' help."""

from __future__ import annotations

from typing import Any

import pytest

from lifecycle.params import BackfillParams, RunOptions
from lifecycle.settings import Settings, Source


def _constraints(metadata: list[Any]) -> list[Any]:
    return [m for m in metadata if not isinstance(m, Source)]


def test_run_options_are_exactly_the_overridable_settings() -> None:
    assert sorted(RunOptions.model_fields) == sorted(Settings.overridable())


@pytest.mark.parametrize("name", Settings.overridable())
def test_each_run_option_has_its_settings_type_and_constraints(name: str) -> None:
    option, setting = RunOptions.model_fields[name], Settings.model_fields[name]
    assert setting.annotation is not None
    assert option.annotation == setting.annotation | None
    assert _constraints(option.metadata) == _constraints(setting.metadata)
    assert option.default is None


def test_the_secret_is_never_a_parameter() -> None:
    assert "api_key" not in BackfillParams.model_fields


def test_the_parameters_schema_carries_the_settings_help() -> None:
    props = BackfillParams.model_json_schema()["properties"]
    for name in Settings.overridable():
        assert props[name]["description"] == Settings.model_fields[name].description
