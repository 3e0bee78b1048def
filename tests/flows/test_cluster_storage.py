"""On an existing Dask cluster the run folder must be on storage every worker sees: checked before any
shard is pushed, and a worker that cannot see it named in one line."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from flows.cluster import storage_problem


def test_every_worker_of_a_real_cluster_sharing_this_disk_sees_the_run_folder(tmp_path: Path) -> None:
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=":0") as cluster,
        distributed.Client(cluster) as client,
    ):
        assert storage_problem(client, tmp_path) is None
    assert list(tmp_path.iterdir()) == [], "the probe file is left behind"


class OtherDisks:
    """A cluster whose second and third workers mount something else at the run folder's path: each
    runs the check on a folder of its own, where the run's token is not."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def run(self, check: Callable[..., bool], path: str, token: str) -> dict[str, Any]:
        elsewhere = self.root / "elsewhere"
        elsewhere.mkdir(exist_ok=True)
        return {
            "tcp://10.0.0.7:40001": check(path, token),
            "tcp://10.0.0.8:40001": check(str(elsewhere / Path(path).name), token),
            "tcp://10.0.0.9:40001": check(str(elsewhere / "nothing"), token),
        }


def test_a_worker_that_cannot_see_the_run_folder_is_named_in_one_line(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    problem = storage_problem(OtherDisks(tmp_path), run)
    assert problem is not None
    assert problem.startswith(f"the Dask worker tcp://10.0.0.8:40001 (and 1 more of 3) cannot see the run folder {run}")
    assert "--run-dir" in problem
    assert "\n" not in problem
    assert list(run.iterdir()) == []
