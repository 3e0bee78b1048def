"""Each preset on its committed sample: the mapping reproduces the sample's known target state, the
row accounting closes with the known fate of every messy row, and inspect names the right preset."""

from __future__ import annotations

import gzip
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml

from frigade.catalog import Catalog, parse_catalog
from lifecycle.exports import scan_export, sources_of
from samples.exports import SAMPLES, Sample, render
from transforms.codes import Codes
from transforms.inspect import inspect_sample
from transforms.mapping import map_events
from transforms.presets import PRESETS, load_presets, resolve_mapping
from transforms.schema import EVENT_SCHEMA
from transforms.spec import SourceMapping
from transforms.state import LOG_COLUMNS, target_from_log
from transforms.validate import catalog_frames, classify, order_log, row_key

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "data"
IDS = [s.folder for s in SAMPLES]


def load_catalog(sample: Sample | None = None) -> Catalog:
    path = sample.catalog_path(DATA) if sample else DATA / "catalog.yaml"
    return parse_catalog(path.read_text(), str(path.relative_to(ROOT)))


def frames(sample: Sample | None = None) -> tuple[pl.LazyFrame, pl.LazyFrame]:
    cat = load_catalog(sample)
    return catalog_frames(cat.step_table(), {f.slug: f.status for f in cat.flows})


def scan(path: Path) -> pl.LazyFrame:
    """As the pipeline reads exports: CSV all text, JSON lines with inferred types."""
    return scan_export(path)


def sample_mapping(sample: Sample) -> SourceMapping:
    mp = sample.mapping_path(DATA)
    doc = yaml.safe_load(mp.read_text()) if mp else None
    return resolve_mapping(sample.preset, doc)


def classified(sample: Sample) -> pl.DataFrame:
    """As the pipeline maps an export: each of its files (a folder's, an archive's) on its own."""
    flows, steps = frames(sample)
    mapping = sample_mapping(sample)
    events = [map_events(s.scan, mapping, s.name, steps=steps) for s in sources_of([sample.path(DATA)], mapping)]
    return classify(pl.concat(events), flows, steps).collect()


def ordered(events: pl.DataFrame, sample: Sample | None = None, *, latest_row_only: bool = False) -> pl.DataFrame:
    """The valid rows of classified ``events`` in the pipeline's log order (``order_log``), duplicates
    marked; the files are numbered in name order."""
    files = sorted(events.get_column("source_file").unique().to_list())
    file_order = pl.col("source_file").replace_strict(files, list(range(len(files))), return_dtype=pl.Int64)
    valid = events.filter(pl.col("status") == "valid")
    keyed = valid.with_columns(row_key(file_order, pl.col("source_row")).alias("row_key"))
    supersede = sample_mapping(sample).latest_status_wins if sample else False
    slugs = len(Codes.from_frames(*frames(sample)).slugs)
    return order_log(keyed, slugs, latest_row_only=latest_row_only, latest_status_wins=supersede)


def state_of(
    events: pl.DataFrame, sample: Sample | None = None, *, latest_row_only: bool = False
) -> dict[str, dict[str, Any]]:
    """Target state (as in expected.json) of classified events, through the real stages."""
    log = ordered(events, sample, latest_row_only=latest_row_only).filter(~pl.col("duplicate"))
    flows_df, steps_df = target_from_log(log.select(LOG_COLUMNS), Codes.from_frames(*frames(sample))).state()
    out: dict[str, dict[str, Any]] = {}
    by_flow: dict[tuple[str, str], dict[str, dict[str, bool]]] = {}
    for r in steps_df.iter_rows(named=True):
        by_flow.setdefault((r["user_id"], r["flow_slug"]), {})[r["step_id"]] = {
            "started": r["step_started"],
            "completed": r["step_completed"],
            "skipped": r["step_skipped"],
        }
    cat = load_catalog(sample)
    for r in flows_df.iter_rows(named=True):
        flow = cat.get(r["flow_slug"])
        assert flow is not None
        steps_state = by_flow.get((r["user_id"], r["flow_slug"]), {})
        out.setdefault(r["user_id"], {})[r["flow_slug"]] = {
            "started": r["started"],
            "completed": r["completed"],
            "skipped": r["skipped"],
            "current_step_index": r["current_step_index"],
            "steps": {s: steps_state[s] for s in flow.step_ids},
        }
    return out


def row_fates(events: pl.DataFrame) -> dict[str, int]:
    """Rows per bucket: a row counts once, in the best bucket any of its events reached."""
    rank = events.group_by("source_file", "source_row").agg(
        pl.col("status").replace_strict({"valid": 0, "quarantined": 1, "dropped": 2}, return_dtype=pl.Int64).min()
    )
    counts = dict(rank.group_by("status").len().iter_rows())
    return {"valid": counts.get(0, 0), "quarantined": counts.get(1, 0), "dropped": counts.get(2, 0)}


def expected(sample: Sample) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(sample.expected_path(DATA).read_text())
    return result


@pytest.fixture(params=SAMPLES, ids=IDS)
def sample(request: pytest.FixtureRequest) -> Sample:
    s: Sample = request.param
    return s


def test_every_preset_is_built_in_and_has_a_sample() -> None:
    names = {"appcues", "userflow", "pendo", "chameleon", "userpilot", "segment", "mixpanel"}
    names |= {"amplitude", "frigade-csv", "long", "wide"}
    assert set(PRESETS) == names
    assert {s.preset for s in SAMPLES} == names
    assert load_presets() == PRESETS


def unpacked(name: str, blob: bytes) -> object:
    """A file's content with compression undone: gzip and zip bytes depend on the zlib build, the rows
    they hold do not."""
    if name.endswith(".gz"):
        return gzip.decompress(blob)
    if name.endswith(".zip"):
        with zipfile.ZipFile(io.BytesIO(blob)) as zf:
            return [(m, unpacked(m, zf.read(m))) for m in zf.namelist()]
    return blob


def test_committed_samples_are_what_the_generator_writes(sample: Sample) -> None:
    files = render(sample)
    for name, blob in files.items():
        got = (DATA / sample.folder / name).read_bytes()
        assert unpacked(name, got) == unpacked(name, blob), f"regenerate: python data/make_samples.py ({name})"
    export = sample.path(DATA)
    if export.is_dir():
        on_disk = {str(p.relative_to(DATA / sample.folder)) for p in export.rglob("*") if p.is_file()}
        assert on_disk == {n for n in files if n.startswith(sample.export + "/")}, "stale files: regenerate"


def test_sample_maps_to_its_expected_state(sample: Sample) -> None:
    events = classified(sample)
    assert events.select(list(EVENT_SCHEMA)).schema == pl.Schema(EVENT_SCHEMA)
    want = expected(sample)
    assert state_of(events, sample, latest_row_only=sample_mapping(sample).state_rows) == want["users"]


def test_sample_row_accounting_closes_with_known_fates(sample: Sample) -> None:
    events = classified(sample)
    want = expected(sample)
    fates = row_fates(events)
    rows_in = scan(sample.path(DATA)).select(pl.len()).collect().item()
    assert rows_in == want["rows"]
    # rows that produced no event at all (a wide row with no progress) are dropped
    no_event = rows_in - events.select("source_file", "source_row").n_unique()
    assert fates["quarantined"] == want["rows_quarantined"], events.filter(pl.col("status") == "quarantined")
    assert fates["dropped"] + no_event == want["rows_dropped"]
    assert fates["valid"] + fates["quarantined"] + fates["dropped"] + no_event == rows_in


def test_sample_has_messy_rows(sample: Sample) -> None:
    want = expected(sample)
    assert 15 <= want["rows"] <= 200
    assert len(want["users"]) >= 5
    flows = {f for u in want["users"].values() for f in u}
    assert len(flows) >= 1 if sample.preset in ("frigade-csv",) or "progress" in sample.folder else len(flows) >= 2
    assert want["rows_dropped"] + want["rows_quarantined"] > 0


#: home-grown tables: a mapping over long, which no preset is expected to recognise
HOME_GROWN = [s for s in SAMPLES if s.preset == "long" and s.mapping]


@pytest.mark.parametrize("s", [s for s in SAMPLES if s not in HOME_GROWN], ids=lambda s: s.folder)
def test_inspect_names_the_right_preset(s: Sample) -> None:
    path = s.path(DATA)
    result = inspect_sample(scan(path).head(200), str(path), PRESETS)
    assert result.preset == s.preset, [(f.name, f.fits, f.score, f.why) for f in result.fits[:4]]
    assert result.profile.height == len(scan(path).collect_schema())
    assert result.events.height > 0
    assert result.time_range[0] is not None


@pytest.mark.parametrize("s", HOME_GROWN, ids=lambda s: s.folder)
def test_inspect_with_the_users_mapping_produces_events(s: Sample) -> None:
    flows, steps = frames(s)
    path = s.path(DATA)
    result = inspect_sample(
        scan(path).head(50), str(path), PRESETS, mapping=sample_mapping(s), steps=steps, flows=flows
    )
    assert result.mapping == "long"
    assert result.events.height > 0
    assert "status" in result.events.columns


VENDORS = [s for s in SAMPLES if s.preset not in ("long", "wide", "frigade-csv")]


@pytest.mark.parametrize("s", VENDORS, ids=lambda s: s.folder)
def test_inspect_command_names_the_preset_of_each_vendor_export_as_shipped(s: Sample) -> None:
    """The file, folder or archive exactly as the vendor ships it, given to `inspect` as a user would:
    the preset that fits is the vendor's, and with the sample's catalog only the sample's row for a
    deleted flow is unknown to it."""
    from rich.console import Console

    from cli.inspect import main

    buf = io.StringIO()
    code = main(
        str(s.path(DATA)),
        preset=None,
        mapping=None,
        catalog=str(s.catalog_path(DATA)),
        rows=1000,
        console=Console(file=buf, width=400),
    )
    out = buf.getvalue()
    assert code == 0, out
    fits = next(line for line in out.splitlines() if "preset that fits" in line)
    assert fits.split("│")[2].split()[0] == s.preset, fits
    gaps = [line for line in out.splitlines() if "the catalog does not have" in line]
    assert all(" 1 row names 1 flow " in line for line in gaps), gaps


def test_a_preset_whose_event_column_reads_nothing_does_not_fit() -> None:
    """The long sample's `data` column holds JSON text, so Userflow's dotted `data.object.name` resolves
    into it and reads nothing: a preset with no event name in the sample is no fit."""
    path = DATA / "long" / "events.csv"
    result = inspect_sample(scan(path).head(200), str(path), PRESETS)
    userflow = next(f for f in result.fits if f.name == "userflow")
    assert not userflow.fits
    assert "no event names in the sample" in userflow.why
    assert [f.name for f in result.fits if f.fits] == ["long"]


def test_a_retried_userflow_webhook_is_a_duplicate_of_its_event() -> None:
    """A retry is a new delivery (its own id) around the same event: the event's id inside it is what
    de-duplicates, so the retried row's events are the only duplicates."""
    sample = next(s for s in SAMPLES if s.folder == "userflow/webhooks")
    log = ordered(classified(sample), sample)
    duplicates = log.filter(pl.col("duplicate"))
    assert duplicates.height >= 1
    assert duplicates.get_column("source_row").n_unique() == 1
