"""A rich progress bar for the push: requests done / planned, rate, ETA, errors so far."""

from __future__ import annotations

from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

from frigade.push import Outcome


class PushProgress:
    def __init__(self, total: int, rate: float, console: Console | None = None) -> None:
        self.total, self.rate = total, rate
        self.errors = 0
        self._progress = Progress(
            TextColumn("[bold]push[/]"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[speed]:>7.1f} req/s"),
            TimeRemainingColumn(),
            TextColumn("errors: {task.fields[errors]}"),
            console=console or Console(stderr=True),
            transient=False,
        )
        self._task: TaskID | None = None

    def __enter__(self) -> PushProgress:
        self._progress.start()
        self._task = self._progress.add_task("push", total=self.total, speed=0.0, errors=0)
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self._progress.stop()

    def advance(self, outcome: Outcome) -> None:
        if outcome.outcome in ("rejected", "failed"):
            self.errors += 1
        if self._task is None:
            return
        task = self._progress.tasks[self._task]
        speed = task.speed or 0.0
        self._progress.update(self._task, advance=1, speed=speed, errors=self.errors)
