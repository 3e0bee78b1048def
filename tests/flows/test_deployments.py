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
