from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from emulator.embedded import EmbeddedEmulator


@pytest.fixture(scope="session")
def shared_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedEmulator]:
    """One default emulator process per test session (per xdist worker); tests reset it."""
    with EmbeddedEmulator(db_path=tmp_path_factory.mktemp("emulator") / "emulator.db") as emu:
        yield emu


@pytest.fixture
def emu(shared_emulator: EmbeddedEmulator) -> EmbeddedEmulator:
    shared_emulator.reset()
    return shared_emulator


@pytest.fixture
def client(emu: EmbeddedEmulator) -> Iterator[httpx.Client]:
    """A client with the public key, like the migration job's."""
    with httpx.Client(base_url=emu.url, headers=emu.headers(private=False), timeout=10.0) as c:
        yield c


@pytest.fixture
def private_client(emu: EmbeddedEmulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=emu.url, headers=emu.headers(private=True), timeout=10.0) as c:
        yield c
