"""A home-grown Postgres state table (data/state-table: ``\\copy user_onboarding TO ... CSV HEADER``) and
its short mapping, backfilled through the CLI into a real emulator process: every user's state is the
sample's expected.json, nothing is sent that changes nothing, and the row accounting closes with the
sample's known fates (the retired flow left out, the untouched items, the rows quarantined)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from emulator.embedded import EmbeddedEmulator
from frigade.catalog import parse_catalog
from samples.state_table import EXPORT, FOLDER
from tests.e2e.landing import assert_landed
from tests.e2e.servers import ROOT, cli

pytestmark = pytest.mark.slow
SAMPLE = ROOT / "data" / FOLDER
CATALOG = ROOT / "data" / "catalog.yaml"


def test_a_postgres_state_table_backfills_with_a_short_mapping_and_lands_exactly(
    prefect_env: dict[str, str], tmp_path: Path
) -> None:
    with EmbeddedEmulator(catalog=CATALOG) as emulator:
        args = ["backfill", str(SAMPLE / EXPORT), "--mapping", str(SAMPLE / "mapping.yaml"), "--catalog", str(CATALOG)]
        args += ["--api-url", emulator.url, "--run-dir", str(tmp_path / "run"), "--rate", "500"]
        res = cli(args, {**prefect_env, "FRIGADE_API_KEY": emulator.public_key}, tmp_path)
        # the sample's two rows for an item its checklist no longer has are progress not migrated: the
        # run lands everything else, then says so and ends exit 1
        assert res.returncode == 1, res.stdout + res.stderr
        assert res.stderr.splitlines()[-1].startswith("progress not migrated: 2 user-flows of 2 users"), res.stderr

        expected = json.loads((SAMPLE / "expected.json").read_text())
        assert_landed(emulator, expected, parse_catalog(CATALOG.read_text(), str(CATALOG)))
        assert emulator.stats()["writes_unchanged"] == 0, "a request was sent that changed nothing"

    run = json.loads((tmp_path / "run" / "run.json").read_text())
    counts = run["counts"]
    assert counts["rows_in"] == expected["rows"]
    assert counts["rows_dropped"] == expected["rows_dropped"]
    assert counts["rows_quarantined"] == expected["rows_quarantined"]
    assert counts["rows_flow_left_out"] == 1
    assert run["accounting_closes"]
    assert run["users_differing"] == 0
