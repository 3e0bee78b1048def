"""transforms.inspect (pure) and the `inspect` command's printing and exit codes."""

from __future__ import annotations

import io
from pathlib import Path

import polars as pl
from rich.console import Console

from cli.inspect import main
from transforms.inspect import column_profile, inspect_sample
from transforms.presets import PRESETS

from .test_presets import DATA

CATALOG = str(DATA / "catalog.yaml")


def test_profile_counts_nulls_distincts_and_examples() -> None:
    df = pl.DataFrame({"a": ["x", "", None, "y"], "b": [1, 1, 2, None]})
    prof = column_profile(df).rows(named=True)
    assert prof[0] == {"column": "a", "dtype": "String", "null_share": 0.5, "distinct": 4, "examples": "x, , y"}
    assert prof[1]["null_share"] == 0.25
    assert prof[1]["distinct"] == 3


def test_no_preset_fits_and_it_says_why() -> None:
    lf = pl.LazyFrame({"customer": ["c1"], "did_thing": ["yes"], "when": ["2024-01-01"]})
    result = inspect_sample(lf, "odd.csv", PRESETS)
    assert result.preset is None
    assert result.why.startswith("no preset fits")
    assert "--mapping" in result.why
    assert all(not f.fits for f in result.fits)


def test_an_aggregate_file_is_named_as_such() -> None:
    lf = pl.LazyFrame({"flow": ["flow_onboarding"], "step": ["connect-data"], "count": [12], "users": [9]})
    result = inspect_sample(lf, "dashboard.csv", PRESETS)
    assert result.preset is None
    assert "aggregate export" in result.why
    assert "cannot become per-user state" in result.why


def test_event_vocabulary_decides_between_similar_shapes() -> None:
    rows = {
        "user_id": ["u1", "u2"],
        "flow_id": ["flow_onboarding"] * 2,
        "event": ["flow_started", "step_completed"],
        "time": ["2024-03-01T10:00:00Z"] * 2,
    }
    result = inspect_sample(pl.LazyFrame(rows), "own.csv", PRESETS)
    long_fit = next(f for f in result.fits if f.name == "long")
    assert long_fit.vocabulary == 0.0
    assert not long_fit.fits
    frigade = {**rows, "event": ["STARTED_FLOW", "COMPLETED_FLOW"]}
    assert inspect_sample(pl.LazyFrame(frigade), "own.csv", PRESETS).preset == "long"


def test_a_naive_time_is_pointed_out() -> None:
    lf = pl.LazyFrame(
        {
            "user_id": ["u1"],
            "flow_slug": ["flow_onboarding"],
            "action": ["STARTED_FLOW"],
            "created_at": ["2024-03-01 10:00"],
        }
    )
    result = inspect_sample(lf, "e.csv", PRESETS)
    assert any("without a zone" in n for n in result.notes)


def capture() -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, width=200, force_terminal=False), buf


def test_command_prints_summary_first_then_profile_and_events() -> None:
    console, buf = capture()
    path = str(DATA / "appcues" / "appcues-events.csv")
    catalog = str(DATA / "appcues" / "catalog.yaml")
    code = main(path, preset=None, mapping=None, catalog=catalog, rows=40, console=console)
    out = buf.getvalue()
    assert code == 0
    marks = ["rows sampled", "┃ preset", "┃ column", "┃ source_row"]
    assert [out.index(m) for m in marks] == sorted(out.index(m) for m in marks)
    assert "appcues" in out
    assert "checklist_shown" in out
    assert "STARTED_STEP" in out


def test_command_reads_jsonl_and_parquet(tmp_path: Path) -> None:
    console, buf = capture()
    assert (
        main(str(DATA / "userflow" / "events.jsonl"), preset=None, mapping=None, catalog=None, rows=20, console=console)
        == 0
    )
    assert "userflow" in buf.getvalue()
    parquet = tmp_path / "events.parquet"
    pl.read_csv(DATA / "long" / "events.csv", infer_schema=False).write_parquet(parquet)
    console, buf = capture()
    assert main(str(parquet), preset="long", mapping=None, catalog=CATALOG, rows=20, console=console) == 0
    assert "STARTED_FLOW" in buf.getvalue()


def test_command_bad_input_exits_2(tmp_path: Path) -> None:
    console, buf = capture()
    assert main(str(tmp_path / "nope.csv"), preset=None, mapping=None, catalog=None, rows=5, console=console) == 2
    assert "file not found" in buf.getvalue()
    console, buf = capture()
    path = str(DATA / "long" / "events.csv")
    assert main(path, preset="heap", mapping=None, catalog=None, rows=5, console=console) == 2
    assert "unknown preset" in buf.getvalue()
