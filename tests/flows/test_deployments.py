"""The deployments check tells at deploy time what a scheduled run would refuse at 02:00."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from flows.deployments import problems

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        ({"max_failures": "lots"}, "max_failures must be a count or a percentage"),
        ({"preset": "nosuch"}, "unknown preset 'nosuch'"),
        ({"rules": "nosuch"}, "rules 'nosuch' is neither a profile"),
    ],
    ids=["max-failures", "preset", "rules"],
)
def test_a_setting_a_run_would_refuse_fails_the_check(
    edit: dict[str, str], problem: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    doc = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    doc["deployments"][1]["parameters"]["params"].update(edit)
    path = tmp_path / "prefect.yaml"
    path.write_text(yaml.safe_dump(doc))
    monkeypatch.chdir(ROOT)  # entrypoints are relative to the project
    found = problems(path)
    assert len(found) == 1
    assert found[0].startswith("nightly-sync: ")
    assert problem in found[0]


def _nightly(tmp_path: Path, params: dict[str, object], env: dict[str, str] | None = None) -> list[str]:
    doc = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    nightly = doc["deployments"][1]
    nightly["parameters"]["params"] = params
    if env is not None:
        nightly["job_variables"] = {"env": env}
    path = tmp_path / "prefect.yaml"
    path.write_text(yaml.safe_dump(doc))
    return problems(path)


def test_a_deployment_that_would_write_to_production_without_saying_so_fails_the_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    given: dict[str, object] = {"exports": ["exports/latest.csv"], "api_key_block": "frigade-api-key"}
    (found,) = _nightly(tmp_path, given)
    assert found.startswith("nightly-sync: no api_url: a run would write to https://api.frigade.com (production)")
    # said: production by name, the worker's environment, or the deployment's own environment
    assert _nightly(tmp_path, given | {"api_url": "https://api.frigade.com"}) == []
    assert _nightly(tmp_path, given | {"api_url": None}) == []
    assert _nightly(tmp_path, given, env={"FRIGADE_API_URL": "http://127.0.0.1:8787"}) == []


def test_every_example_deployment_names_its_api() -> None:
    doc = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    runs = [d for d in doc["deployments"] if "params" in (d.get("parameters") or {})]
    assert len(runs) == 3
    assert all("api_url" in d["parameters"]["params"] for d in runs)
