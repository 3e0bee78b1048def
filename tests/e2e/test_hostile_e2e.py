"""Hostile exports through the real CLI (``backfill``) against a real emulator process (issue 12): refused
exports end with exit 2, no traceback and nothing sent; accepted ones quarantine their poison rows,
send the rest and close the row accounting."""

from __future__ import annotations

import gzip
import json
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from emulator.embedded import EmbeddedEmulator
from tests.e2e.servers import ROOT, cli

pytestmark = pytest.mark.slow
CATALOG_PATH = ROOT / "data" / "catalog.yaml"
HEADER = "user_id,flow_slug,step_id,action,created_at,data\n"
GOOD = "u1,flow_welcome_tour,,STARTED_FLOW,2024-03-01T10:00:00Z,\n"


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmbeddedEmulator]:
    with EmbeddedEmulator(catalog=CATALOG_PATH) as emu:
        yield emu


def backfill(path: Path, emu: EmbeddedEmulator, env: dict[str, str], cwd: Path):  # type: ignore[no-untyped-def]
    return cli(
        ["backfill", str(path), "--catalog", str(CATALOG_PATH), "--api-url", emu.url, "--run-dir", str(cwd / "run")],
        {**env, "FRIGADE_API_KEY": emu.public_key, "COLUMNS": "1000"},
        cwd,
    )


def _ragged(t: Path) -> Path:
    p = t / "ragged.csv"
    p.write_text(HEADER + GOOD * 50 + "u2,flow_welcome_tour,STARTED_FLOW,2024-03-01T10:00:00Z\n" + GOOD)
    return p


def _quote(t: Path) -> Path:
    p = t / "quote.csv"
    p.write_text(HEADER + GOOD + 'u2,"flow_welcome_tour,,STARTED_FLOW,2024-03-01T10:00:00Z,\n' + GOOD * 3)
    return p


def _truncated(t: Path) -> Path:
    p = t / "cut.parquet"
    import polars as pl

    pl.DataFrame({"user_id": ["u1"], "flow_slug": ["flow_welcome_tour"], "action": ["STARTED_FLOW"]}).write_parquet(p)
    p.write_bytes(p.read_bytes()[:-20])
    return p


def _jsonl(t: Path) -> Path:
    p = t / "broken.jsonl"
    row = {"user_id": "u1", "flow_slug": "flow_welcome_tour", "action": "STARTED_FLOW", "created_at": "2024-03-01Z"}
    p.write_text(json.dumps(row) + "\n" + '{"user_id": "u2", "flow_slug": \n')
    return p


def _zipped(t: Path, last: bytes = b"") -> Path:
    """An export as Amplitude ships it: a zip of gzipped JSON lines."""
    rows = [
        {"user_id": u, "flow_slug": "flow_welcome_tour", "action": a, "created_at": f"2024-03-01T1{i}:00:00Z"}
        for u in ("z1", "z2")
        for i, a in enumerate(("STARTED_FLOW", "COMPLETED_FLOW"))
    ]
    p = t / "export.zip"
    with zipfile.ZipFile(p, "w") as archive:
        archive.writestr("2024/part-0.json.gz", gzip.compress("".join(json.dumps(r) + "\n" for r in rows).encode()))
        archive.writestr("2024/part-1.json.gz", gzip.compress((json.dumps(rows[0]) + "\n").encode() * 2 + last))
    return p


def _duplicate_header(t: Path) -> Path:
    p = t / "dup.csv"
    p.write_text("user_id," + HEADER + "a,b,flow_welcome_tour,,STARTED_FLOW,2024-03-01T10:00:00Z,\n")
    return p


def _no_action(t: Path) -> Path:
    p = t / "noaction.csv"
    p.write_text("user_id,flow_slug,created_at\nu1,flow_welcome_tour,2024-03-01T10:00:00Z\n")
    return p


REFUSED: dict[str, tuple[Callable[[Path], Path], str]] = {
    "ragged row": (_ragged, "row 51 (line 52) has 4 fields"),
    "unbalanced quote": (_quote, "a quote opened on line 3 is never closed"),
    "truncated parquet": (_truncated, "not a readable Parquet file"),
    "broken jsonl line": (_jsonl, "line 2 is not valid JSON"),
    "duplicate header": (_duplicate_header, "two columns are named 'user_id'"),
    "missing column": (_no_action, "missing column: none of 'action'"),
    "missing path": (lambda t: t / "nope.csv", "file not found"),
    "folder without exports": (lambda t: t / "exports", "the folder holds no export file"),
    "a bad line inside an archive": (
        lambda t: _zipped(t, b'{"user_id": "u2", "flow_slug": \n'),
        "!2024/part-1.json.gz, row 3: line 3 is not valid JSON",
    ),
    "glob matching nothing": (lambda t: t / "*.csv", "no file matches this pattern"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_an_unreadable_export_exits_2_naming_it_and_sends_nothing(
    emulator: EmbeddedEmulator, prefect_env: dict[str, str], tmp_path: Path, case: str
) -> None:
    emulator.reset()
    (tmp_path / "exports").mkdir()
    make, message = REFUSED[case]
    path = make(tmp_path)
    res = backfill(path, emulator, prefect_env, tmp_path)
    out = res.stdout + res.stderr
    assert res.returncode == 2, out
    assert "Traceback" not in res.stderr, res.stderr
    flat = " ".join(out.split())
    assert str(path) in flat
    assert message in flat
    assert emulator.stats()["requests_total"] == 0


def test_a_zip_of_gzipped_json_lines_is_sent_as_its_rows(
    emulator: EmbeddedEmulator, prefect_env: dict[str, str], tmp_path: Path
) -> None:
    """Issue 22: an export in the container its vendor ships it in, with nothing unpacked by hand."""
    emulator.reset()
    res = backfill(_zipped(tmp_path), emulator, prefect_env, tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["counts"]["rows_in"] == 6
    assert run["counts"]["rows_quarantined"] == 0
    assert emulator.stats()["distinct_users"] == 2
    assert "2 of 2 users match" in " ".join(res.stdout.split())


def test_poison_rows_are_quarantined_and_the_rest_is_sent(
    emulator: EmbeddedEmulator, prefect_env: dict[str, str], tmp_path: Path
) -> None:
    emulator.reset()
    deep = json.dumps('{"a":' * 5000 + "1" + "}" * 5000)
    path = tmp_path / "poison.csv"
    path.write_text(
        HEADER
        + GOOD
        + "u2,flow_announcement,,STARTED_FLOW,2024-03-01T10:00:00Z,\n"
        + "year5,flow_welcome_tour,,STARTED_FLOW,+12024-01-01T00:00:00Z,\n"
        + f"deep,flow_welcome_tour,,STARTED_FLOW,2024-03-01T10:00:00Z,{deep}\n"
        + "epoch,flow_welcome_tour,,STARTED_FLOW,1970-01-20T18:48:07Z,\n"
        + f"{'x' * 600},flow_welcome_tour,,STARTED_FLOW,2024-03-01T10:00:00Z,\n"
        + " u1,flow_welcome_tour,,COMPLETED_FLOW,2024-03-01T11:00:00Z,\n"
    )
    res = backfill(path, emulator, prefect_env, tmp_path)
    # the rest is sent, and the run ends exit 1 because four users' progress was not migrated
    assert res.returncode == 1, res.stdout + res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    assert "progress not migrated: 4 user-flows of 4 users (4 rows" in " ".join(res.stderr.split())
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    c = run["counts"]
    assert c["rows_in"] == 7
    assert c["rows_quarantined"] == c["rows_not_migrated"] == 4
    assert c["rows_in"] == c["rows_sent"] + c["rows_redundant"] + c["rows_dropped"] + c["rows_quarantined"]
    stats = emulator.stats()
    # ' u1' is its own user (ids as written), and the report warns about it
    assert stats["writes_accepted"] == c["requests_planned"] == 3
    assert stats["distinct_users"] == 3
    assert c["user_ids_differing_by_whitespace"] == 2
    assert "2 user ids differ from another only by leading or trailing whitespace" in " ".join(
        (tmp_path / "run" / "report.md").read_text().split()
    )
    assert set(run["quarantine_reasons"]) == {
        "data is not a JSON object of at most 127 levels",
        "user id longer than 512 bytes",
        *(r for r in run["quarantine_reasons"] if r.startswith("time ")),
    }
