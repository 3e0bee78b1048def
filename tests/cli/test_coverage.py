"""Coverage before sending: ``plan`` (and ``inspect``) print what each of the export's event names
becomes, with its rows and users, and the table's totals are the row accounting's buckets, on every
bundled sample."""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl
import pytest
import yaml

from cli.app import main
from frigade.catalog import parse_catalog
from lifecycle.exports import plan_exports, sources_of
from samples.exports import SAMPLES, Sample
from tests.e2e.servers import ROOT
from transforms.analysis import export_coverage
from transforms.presets import resolve_mapping

DATA = ROOT / "data"
TOTALS = re.compile(
    r"(\d+) rows in = (\d+) become actions \+ (\d+) not onboarding state \+ (\d+) not a user \+ "
    r"(\d+) progress not migrated"
)


def _args(sample: Sample) -> list[str]:
    args = [str(sample.path(DATA)), "--preset", sample.preset, "--catalog", str(sample.catalog_path(DATA))]
    mapping = sample.mapping_path(DATA)
    return args + (["--mapping", str(mapping)] if mapping is not None else [])


def _counts(sample: Sample) -> dict[str, int]:
    mp = sample.mapping_path(DATA)
    mapping = resolve_mapping(sample.preset, yaml.safe_load(mp.read_text()) if mp else None)
    catalog = sample.catalog_path(DATA)
    cat = parse_catalog(catalog.read_text(), str(catalog))
    return plan_exports([sample.path(DATA)], mapping, cat).counts


@pytest.mark.parametrize("sample", SAMPLES, ids=[s.folder for s in SAMPLES])
def test_plan_prints_the_coverage_table_and_it_adds_up_to_the_row_accounting(
    sample: Sample, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["plan", *_args(sample), "--run-dir", str(tmp_path / "p")]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "coverage: what each event of the export becomes" in out
    totals = TOTALS.search(out)
    assert totals is not None, out
    c = _counts(sample)
    want = [
        c["rows_in"],
        c["rows_sent"] + c["rows_redundant"],
        c["rows_dropped"],
        c["rows_not_a_user"],
        c["rows_not_migrated"],
    ]
    assert [int(g) for g in totals.groups()] == want


def test_each_row_counts_once_under_its_event_name_with_its_users() -> None:
    sample = next(s for s in SAMPLES if s.folder == "appcues")
    mapping = resolve_mapping("appcues", None)
    catalog = sample.catalog_path(DATA)
    cat = parse_catalog(catalog.read_text(), str(catalog))
    cov = export_coverage(sources_of([sample.path(DATA)], mapping), mapping, cat)
    assert int(cov["rows"].sum()) == _counts(sample)["rows_in"]
    lines = {(e, b): (r, u) for e, r, u, b, _ in cov.iter_rows()}
    assert lines[("appcues:flow_restarted", "not migrated (unknown action 'appcues:flow_restarted')")] == (1, 1)
    assert lines[("step_interacted", "dropped: not onboarding state")] == (1, 1)
    raw = pl.read_csv(sample.path(DATA), infer_schema=False)
    # every event name's rows as the raw file has them, whatever each becomes
    rows_by_event = cov.group_by("event").agg(pl.col("rows").sum())
    assert dict(rows_by_event.iter_rows()) == dict(raw.group_by("name").agg(pl.len()).iter_rows())
    completed = raw.filter(pl.col("name") == "checklist_item_completed")
    assert lines[("checklist_item_completed", "COMPLETED_STEP")] == (completed.height, completed["user_id"].n_unique())


def test_inspect_prints_the_coverage_of_the_rows_it_sampled(capsys: pytest.CaptureFixture[str]) -> None:
    sample = next(s for s in SAMPLES if s.folder == "appcues")
    args = ["inspect", *_args(sample)[:1], "--catalog", str(sample.catalog_path(DATA))]
    assert main(args) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "coverage of the 123 rows sampled: what each event becomes" in out
    assert "123 rows in = 111 become actions + 10 not onboarding state + 0 not a user + 2 progress not migrated" in out


WIDE = """user_id,flow_announcement_completed_at,flow_retired_tour_completed_at
u1,2024-03-01T10:00:00Z,2024-03-01T11:00:00Z
u2,2024-03-01T10:00:00Z,2024-03-01T11:00:00Z
u3,2024-03-01T10:00:00Z,
"""


def test_a_lost_column_of_a_row_planned_for_another_is_listed_as_not_migrated(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    export = tmp_path / "wide.csv"
    export.write_text(WIDE)
    catalog = DATA / "catalog.yaml"
    cat = parse_catalog(catalog.read_text(), str(catalog))
    mapping = resolve_mapping("wide", None)
    counts = plan_exports([export], mapping, cat).counts
    # each row counted once, as planned; two of them also carry a lost column
    assert (counts["rows_sent"], counts["rows_not_migrated"], counts["rows_partly_not_migrated"]) == (3, 0, 2)
    assert counts["user_flows_not_migrated"] == 2
    cov = export_coverage(sources_of([export], mapping), mapping, cat)
    lines = {(e, b): (r, u) for e, r, u, b, _ in cov.iter_rows()}
    assert lines[("flow_announcement_completed_at", "COMPLETED_FLOW")] == (3, 3)
    lost = "not migrated (unknown flow 'flow_retired_tour' (not in the catalog))"
    assert lines[("flow_retired_tour_completed_at", lost)] == (2, 2)
    args = [str(export), "--preset", "wide", "--catalog", str(catalog), "--run-dir", str(tmp_path / "p")]
    assert main(["plan", *args]) == 0
    captured = capsys.readouterr()
    out = " ".join(captured.out.split())
    totals = TOTALS.search(out)
    assert totals is not None
    assert [int(g) for g in totals.groups()] == [3, 3, 0, 0, 0]
    assert "besides, 2 rows counted above under another of their events also carry progress not migrated" in out
    assert "adds up to more than its rows" in out
    assert "a run would end exit 1: progress not migrated: 2 user-flows of 2 users" in " ".join(captured.err.split())
    # --max-quarantined caps those rows too: 0 accepts no loss
    assert main(["plan", *args, "--max-quarantined", "0"]) == 2
    want = "2 of 3 rows are quarantined or carry progress not migrated (66.7%), more than --max-quarantined 0"
    assert want in " ".join(capsys.readouterr().err.split())
