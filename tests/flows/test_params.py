"""Each flow takes one typed parameters model: what a deployment in prefect.yaml is validated against."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from lifecycle.params import BackfillParams, RunOptions, SyncParams

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
    assert checked == 2
