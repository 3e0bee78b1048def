"""End-to-end fixtures: one Prefect server per test worker, shared by the tests that run flows."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.servers import prefect_server, quiet_prefect_env


@pytest.fixture(scope="session")
def prefect_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    home = tmp_path_factory.mktemp("prefect-home")
    with prefect_server(home) as url:
        yield {**quiet_prefect_env(home), "PREFECT_API_URL": url}
