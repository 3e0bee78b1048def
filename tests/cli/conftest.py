"""A real emulator process on 127.0.0.1 for the commands' tests, one per test module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from emulator.embedded import EmbeddedEmulator
from tests.e2e.servers import ROOT


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmbeddedEmulator]:
    with EmbeddedEmulator(catalog=ROOT / "data" / "catalog.yaml") as emu:
        yield emu
