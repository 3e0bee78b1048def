"""The run parameters cannot drift from the settings they override: the same names, the same types
(None added: not given) and the same constraints, and their help is the settings' help."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from lifecycle.params import BackfillParams, RunOptions, SyncParams
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


ROOT = Path(__file__).resolve().parents[2]


def test_given_holds_only_the_settings_given() -> None:
    params = BackfillParams(exports=["e.csv"], rate=50, run_dir="r", mapping_overrides={"user": "uid"})
    assert params.given() == {"rate": 50}
    assert set(params.given()) <= set(RunOptions.model_fields)


@pytest.mark.parametrize(
    "fields",
    [
        {"exports": []},
        {"exports": ["e.csv"], "rate": 0},
        {"exports": ["e.csv"], "concurrency": 0},
        {"exports": ["e.csv"], "mode": "replay"},
        {"exports": ["e.csv"], "api_key": "secret"},
        {"exports": ["e.csv"], "no_such": 1},
    ],
    ids=["no-exports", "rate-0", "concurrency-0", "bad-mode", "a-key-is-never-a-parameter", "unknown"],
)
def test_a_backfill_refuses_bad_parameters(fields: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        BackfillParams.model_validate(fields)


def test_a_sync_plans_state_only_and_remembers_by_default() -> None:
    with pytest.raises(ValidationError):
        SyncParams.model_validate({"exports": ["e.csv"], "mode": "history"})
    assert SyncParams(exports=["e.csv"]).state_dir == "state"


def test_every_deployment_in_prefect_yaml_fits_its_flows_model() -> None:
    models: dict[str, type[BackfillParams]] = {"backfill_flow": BackfillParams, "sync_flow": SyncParams}
    doc = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    checked = 0
    for dep in doc["deployments"]:
        model = models.get(dep["entrypoint"].split(":")[1])
        if model is not None:
            model.model_validate(dep["parameters"]["params"])
            checked += 1
    assert checked == 3
