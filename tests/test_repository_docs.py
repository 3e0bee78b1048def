"""What a user's clone holds is all a message, a docstring or README may point to: the project's
working notes (its design, CLI and API notes) are not in the repository (issue 22)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ABSENT = re.compile(r"\b(?:cli|design|sources|frigade-api)\.md\b|shared/")
PACKAGES = ("cli", "flows", "lifecycle", "transforms", "frigade", "emulator", "samples", "bench", "data", "tests")


def test_nothing_points_to_a_document_outside_the_repository() -> None:
    files = [
        ROOT / "README.md",
        *(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*") if p.suffix in (".py", ".md", ".yaml")),
    ]
    found = [
        f"{p.relative_to(ROOT)}:{n}"
        for p in files
        if p != Path(__file__).resolve()
        for n, line in enumerate(p.read_text(encoding="utf-8", errors="replace").splitlines(), start=1)
        if ABSENT.search(line)
    ]
    assert not found, found
