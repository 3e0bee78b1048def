"""A sync after a sync, then ``audit``: per flow the moves between statuses, and exactly the users who
went backwards, listed, written to regressions.csv and marked in audit.html, which a real headless
Chromium renders with the marks styled."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import polars as pl
import pytest

from emulator.embedded import EmbeddedEmulator
from tests.e2e.servers import cli
from tests.e2e.test_backfill_e2e import CATALOG_PATH, write_sample
from tests.e2e.test_resume_sync_e2e import _extend, run_sync

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
#: what the page's marked rows must look like once styled (tr.regressed, tr.regression)
MARKED = "rgb(254, 226, 226)"
#: appended to a copy of the page: each marked row's computed background and height, into the DOM
PROBE = (
    "<script>for (const tr of document.querySelectorAll('tr.regressed, tr.regression')) {"
    "tr.dataset.bg = getComputedStyle(tr).backgroundColor;"
    "tr.dataset.h = Math.round(tr.getBoundingClientRect().height);}</script>"
)


def chromium(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp / 'chromium-profile'}",
    ]
    return subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=120, check=True)


def test_a_sync_after_a_sync_audit_finds_exactly_the_users_who_regressed(
    prefect_env: dict[str, str], tmp_path: Path
) -> None:
    first, second = tmp_path / "day1.csv", tmp_path / "day2.csv"
    expected = write_sample(first, users=30, seed=41)
    users = sorted({u for u, _ in expected})
    with_progress = sorted({u for (u, _), st in expected.items() if st.started or st.completed or st.skipped})
    regressed = with_progress[3:7]
    # users who never saw the onboarding checklist complete its steps: they move forward, not back
    progressed = [u for u in users if (u, "flow_onboarding") not in expected and u not in regressed][:2]
    assert len(regressed) == 4
    assert len(progressed) == 2
    _extend(first, second, progressed, regressed)
    with EmbeddedEmulator(catalog=CATALOG_PATH) as emu:
        env = {**prefect_env, "FRIGADE_API_KEY": emu.public_key}
        for export, run in ((first, "r1"), (second, "r2")):
            res = run_sync(emu, env, tmp_path, export, run)
            assert res.returncode == 0, res.stdout + res.stderr

    out = tmp_path / "audit"
    res = cli(["audit", str(tmp_path / "r1"), str(tmp_path / "r2"), "--out", str(out)], {}, tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    listed = pl.read_csv(out / "regressions.csv")
    assert set(listed["user_id"].to_list()) == set(regressed)
    assert "flow_visible" not in pl.read_parquet(out / "audit.parquet")["field"].to_list()
    console = " ".join(res.stdout.split())
    assert f"users who regressed: {', '.join(sorted(regressed))} (every change: " in console
    md = (out / "audit.md").read_text()
    assert f"| users with a regression | {len(regressed)} |" in md
    backs = re.findall(r"^\| (\w+) \| (\w[\w ]*) -> (not started) \(back\) \| (\d+) \|$", md, re.MULTILINE)
    assert sum(int(n) for *_, n in backs) == listed.filter(pl.col("field") == "flow_started").height
    assert re.search(r"^\| flow_onboarding \| not started -> started \| 2 \|$", md, re.MULTILINE), md

    if CHROMIUM is None:
        pytest.skip("no chromium on this machine (apt-get install chromium)")
    page = out / "audit.html"
    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    dom = chromium(tmp_path, "--dump-dom", probe.as_uri()).stdout
    rows = re.findall(r'<tr class="regressed" data-user="([^"]+)"[^>]*data-bg="([^"]+)" data-h="(\d+)"', dom)
    assert {user for user, _, _ in rows} == set(regressed)
    assert all(bg == MARKED and int(h) > 0 for _, bg, h in rows), rows
    moves = re.findall(r'<tr class="move regression"[^>]*data-bg="([^"]+)"', dom)
    assert moves
    assert set(moves) == {MARKED}
    shot = tmp_path / "audit.png"
    chromium(tmp_path, f"--screenshot={shot}", "--window-size=1000,1400", "--hide-scrollbars", page.as_uri())
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
