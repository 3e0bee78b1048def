"""Sharding: the shards of an export plan exactly what the whole export plans, every user in one shard."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
import yaml

from frigade.catalog import Catalog, parse_catalog
from lifecycle.exports import analyze_split, estimated_rows, plan_exports, split_events
from lifecycle.record import Attempt, RunRecord
from lifecycle.shards import attempts_since, shard_count
from samples.exports import SAMPLES, Sample
from transforms.analysis import Prepared, plan_requests, shard_of
from transforms.presets import resolve_mapping
from transforms.spec import SourceMapping

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "data"


def catalog() -> Catalog:
    return parse_catalog((DATA / "catalog.yaml").read_text(), "data/catalog.yaml")


def mapping_of(sample: Sample) -> SourceMapping:
    mp = sample.mapping_path(DATA)
    return resolve_mapping(sample.preset, yaml.safe_load(mp.read_text()) if mp else None)


def sharded(
    paths: list[Path], mapping: SourceMapping, shards: int, tmp: Path, mode: str = "state", cat: Catalog | None = None
) -> list[Prepared]:
    cat = cat or catalog()
    split_events(paths, mapping, cat, shards, tmp)
    return [plan_requests(analyze_split(paths, mapping, cat, tmp, k), mode=mode) for k in range(shards)]


def _same(a: pl.DataFrame, b: pl.DataFrame) -> None:
    assert a.columns == b.columns
    assert a.sort(a.columns, nulls_last=True).equals(b.sort(b.columns, nulls_last=True))


@pytest.mark.parametrize("mode", ["state", "history"])
@pytest.mark.parametrize("sample", SAMPLES, ids=[s.folder for s in SAMPLES])
def test_shards_plan_what_the_whole_export_plans(sample: Sample, mode: str, tmp_path: Path) -> None:
    paths, mapping = [sample.path(DATA)], mapping_of(sample)
    cat = parse_catalog(sample.catalog_path(DATA).read_text(), str(sample.catalog_path(DATA)))
    whole = plan_exports(paths, mapping, cat, mode=mode)  # type: ignore[arg-type]
    parts = sharded(paths, mapping, 3, tmp_path, mode, cat)
    _same(whole.plan, pl.concat([p.plan for p in parts]))
    _same(whole.quarantine, pl.concat([p.quarantine for p in parts]))
    _same(whole.expected_flows, pl.concat([p.expected_flows for p in parts]))
    _same(whole.expected_steps, pl.concat([p.expected_steps for p in parts]))
    # every user is in exactly one shard
    users = [set(p.expected_flows["user_id"].to_list()) for p in parts]
    assert sum(len(u) for u in users) == len(set().union(*users))
    # the counts add up, but for the rows that gave no event (in no shard)
    for name in ("rows_sent", "rows_redundant", "rows_quarantined", "requests_planned", "users", "user_flows"):
        assert sum(p.counts[name] for p in parts) == whole.counts[name], name
    no_event = whole.counts["rows_in"] - sum(p.counts["rows_in"] for p in parts)
    assert whole.counts["rows_dropped"] == sum(p.counts["rows_dropped"] for p in parts) + no_event
    assert (
        sum(p.counts["user_ids_differing_by_whitespace"] for p in parts)
        == (whole.counts["user_ids_differing_by_whitespace"])
    )


def test_whitespace_twins_share_a_shard() -> None:
    users = pl.DataFrame({"u": ["alice", " alice", "alice ", "\tbob", "bob", None]})
    shards = users.select(shard_of(pl.col("u"), 7).alias("s"))["s"].to_list()
    assert shards[0] == shards[1] == shards[2]
    assert shards[3] == shards[4]
    assert 0 <= shards[5] < 7


def test_a_user_twice_over_two_files_lands_in_one_shard(tmp_path: Path) -> None:
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    header = "user_id,flow_slug,step_id,action,created_at\n"
    a.write_text(header + "".join(f"u{i},flow_welcome_tour,,STARTED_FLOW,2024-01-01T00:00:00Z\n" for i in range(50)))
    b.write_text(header + "".join(f"u{i},flow_welcome_tour,,COMPLETED_FLOW,2024-02-01T00:00:00Z\n" for i in range(50)))
    mapping = resolve_mapping("long", None)
    parts = sharded([a, b], mapping, 4, tmp_path / "split")
    assert sum(p.expected_flows.height for p in parts) == 50
    assert all(p.expected_flows["completed"].all() for p in parts if p.expected_flows.height)
    # rows name their own file in the quarantine and the plan's origin, shard or not
    assert {p.counts["rows_in"] for p in parts} != {0}


def test_shard_count_follows_the_export_size(tmp_path: Path) -> None:
    assert shard_count(None, 0) == 1
    assert shard_count(None, 5_000_000) == 1
    assert shard_count(None, 5_000_001) == 2
    assert shard_count(None, 10_000_000) == 2
    assert shard_count(None, 100_000_000) == 20
    assert shard_count(3, 10) == 3
    csv = tmp_path / "e.csv"
    csv.write_text("user_id,x\n" + "".join(f"user-{i:06d},{i % 10}\n" for i in range(20_000)))
    assert abs(estimated_rows([csv]) - 20_000) < 200
    pq = tmp_path / "e.parquet"
    pl.read_csv(csv).write_parquet(pq)
    assert estimated_rows([pq]) == 20_000


def test_a_run_attempt_counts_only_the_shard_attempts_it_made() -> None:
    earlier = Attempt(attempt=1, started_at="2026-12-01T10:00:00+00:00", sent=40)
    now = Attempt(attempt=2, started_at="2026-12-01T11:00:01+00:00", sent=7)
    records = [RunRecord(attempts=[earlier, now]), RunRecord(attempts=[earlier]), RunRecord()]
    assert attempts_since(records, "2026-12-01T11:00:00+00:00") == [now]
