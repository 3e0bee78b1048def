"""Every preset's sample, backfilled through the CLI into a real emulator: each user's resulting state
is the sample's expected.json, and the row accounting closes with the sample's known fates.

A vendor's sample is its documented export in the container the vendor ships (a zip of gzipped hours,
a folder of gzipped logs, an API response, pages of one), and the command is the one a new user types:
``backfill EXPORT --preset NAME --catalog FILE``, nothing else (the API and run folder aside)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from emulator.embedded import EmbeddedEmulator
from frigade.catalog import Catalog, parse_catalog
from samples.exports import SAMPLES, Sample
from tests.e2e.landing import assert_landed
from tests.e2e.servers import ROOT, cli

pytestmark = pytest.mark.slow
DATA = ROOT / "data"


def catalog_of(sample: Sample) -> Catalog:
    path = sample.catalog_path(DATA)
    return parse_catalog(path.read_text(), str(path))


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmbeddedEmulator]:
    """One emulator for every sample: it knows the flows of every sample's catalog."""
    flows = {f.slug: f for s in SAMPLES for f in catalog_of(s).flows}
    with EmbeddedEmulator(catalog=Catalog(tuple(flows.values()))) as emu:
        yield emu


@pytest.mark.parametrize("sample", SAMPLES, ids=[s.folder for s in SAMPLES])
def test_sample_backfills_to_its_expected_state(
    sample: Sample, emulator: EmbeddedEmulator, prefect_env: dict[str, str], tmp_path: Path
) -> None:
    emulator.reset()
    catalog = sample.catalog_path(DATA)
    args = ["backfill", str(sample.path(DATA)), "--preset", sample.preset, "--catalog", str(catalog)]
    mapping = sample.mapping_path(DATA)
    if mapping is not None:
        args += ["--mapping", str(mapping)]
    else:
        # a vendor's documented export needs its preset and the catalog, nothing else
        assert sample.catalog is not None or sample.preset in ("long", "segment", "mixpanel", "amplitude")
    args += ["--api-url", emulator.url, "--run-dir", str(tmp_path / "run"), "--rate", "500"]
    res = cli(args, {**prefect_env, "FRIGADE_API_KEY": emulator.public_key}, tmp_path)
    counts = json.loads((tmp_path / "run" / "run.json").read_text())["counts"]
    # a sample with known users' progress that cannot be migrated (an unknown flow, step or action),
    # even in a row planned for another of its events, finishes what it can and ends exit 1, saying so
    lost = counts["user_flows_not_migrated"]
    assert res.returncode == (1 if lost else 0), res.stdout + res.stderr
    assert ("progress not migrated: " in res.stderr.splitlines()[-1]) == bool(lost), res.stderr

    expected = json.loads(sample.expected_path(DATA).read_text())
    assert_landed(emulator, expected, catalog_of(sample))

    assert counts["rows_in"] == expected["rows"]
    assert counts["rows_in"] == (
        counts["rows_sent"] + counts["rows_redundant"] + counts["rows_dropped"] + counts["rows_quarantined"]
    )
    assert counts["rows_quarantined"] == expected["rows_quarantined"]
    assert counts["rows_quarantined"] == counts["rows_not_a_user"] + counts["rows_not_migrated"]
    assert counts["rows_dropped"] == expected["rows_dropped"]
    assert emulator.stats()["writes_unchanged"] == 0, "a request was sent that changed nothing"
    last = res.stdout.strip().splitlines()[-1]
    assert ("match what was migrated; " if lost else "match the export exactly") in last, last
