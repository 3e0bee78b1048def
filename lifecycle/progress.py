"""Rich progress bars: the push's (requests and users done of planned, elapsed time, the rate at which
requests are being answered, requests in flight and their median latency, a smoothed ETA, and errors
so far), and a sharded plan's (the split, then each shard analysed and planned). Off a terminal (a
redirected output, cron, a Prefect worker's log) the push's figures are log lines instead: ``LogProgress``."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from types import TracebackType

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn, TimeElapsedColumn
from rich.text import Text

from frigade.push import Outcome

#: seconds over which the answered-rate is averaged: long enough that the ETA does not jump between
#: refreshes at a steady rate, short enough to follow a throttled or recovered server within a minute
RATE_WINDOW_S = 20.0
#: the rate is re-estimated at most this often; between estimates it holds still
ESTIMATE_EVERY_S = 1.0


class RateEstimate:
    """Requests answered per second over the last ``window`` seconds, measured between the first and
    the last answer in that window (so the one request a limiter lets go at once at the start does
    not show as a rate above the limit), re-estimated at most once a second and holding still between."""

    def __init__(self, window: float = RATE_WINDOW_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.window, self._clock = window, clock
        self._answers: deque[float] = deque()
        self._estimated_at: float | None = None
        self.rate: float | None = None

    def add(self) -> None:
        now = self._clock()
        answers = self._answers
        answers.append(now)
        while now - answers[0] > self.window:
            answers.popleft()
        if self._estimated_at is not None and now - self._estimated_at < ESTIMATE_EVERY_S:
            return
        span = now - answers[0]
        if span >= ESTIMATE_EVERY_S:
            self.rate = (len(answers) - 1) / span
            self._estimated_at = now

    def eta(self, remaining: int) -> float | None:
        return remaining / self.rate if self.rate else None


def _clock_text(seconds: float | None) -> str:
    if seconds is None:
        return "-:--"
    h, rem = divmod(round(seconds), 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


#: printed once above the bar, so each figure on it says what it measures
LEGEND = (
    "push: requests answered/planned, users done/total, elapsed, requests answered per second over "
    f"the last {RATE_WINDOW_S:g} s (and the --rate limit), requests in flight and their median latency "
    "(the API's answers decide how many), time left at that rate, errors"
)

#: (requests in flight, median latency of the recent answers in seconds, NaN before the first)
Flight = Callable[[], tuple[int, float]]


class _Line(ProgressColumn):
    """The bar's figures, built when rich redraws (ten times a second, and once at the end) rather
    than at every answer: one update of the bar per answer cost more CPU than the rest of the bar."""

    def __init__(self, line: Callable[[], str]) -> None:
        super().__init__()
        self._line = line

    def render(self, task: Task) -> Text:
        return Text(self._line())


class PushProgress:
    """``user_requests``: how many requests each user has in this push, so that a user counts as done
    when the last of theirs has an outcome."""

    def __init__(
        self,
        total: int,
        rate: float,
        user_requests: Mapping[str, int] | None = None,
        console: Console | None = None,
        clock: Callable[[], float] = time.monotonic,
        *,
        label: str = "push",
        legend: bool = True,
        flight: Flight | None = None,
    ) -> None:
        self.total, self.limit = total, rate
        self._legend = legend
        self._flight = flight
        self.errors = 0
        self.done = 0
        self._left = dict(user_requests or {})
        self.users_total = len(self._left)
        self.users_done = 0
        self.estimate = RateEstimate(clock=clock)
        self._clock = clock
        self._start = clock()
        self._progress = Progress(
            TextColumn(f"[bold]{escape(label)}[/]"),
            _Line(self._line),
            console=console or Console(stderr=True),
            transient=False,
        )

    def __enter__(self) -> PushProgress:
        if self._legend:
            self._progress.console.print(LEGEND, style="dim", soft_wrap=True, highlight=False)
        self._progress.start()
        self._progress.add_task("push", total=self.total)
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self._progress.stop()

    def _line(self) -> str:
        rate = self.estimate.rate
        answered = "-.-" if rate is None else f"{rate:.1f}"
        flight = ""
        if self._flight is not None:
            n, p50 = self._flight()
            flight = f"{n} in flight, p50 {'-' if p50 != p50 else f'{p50 * 1000:.0f}'} ms  "
        return (
            f"{self.done}/{self.total} req  {self.users_done}/{self.users_total} users  "
            f"{_clock_text(self._clock() - self._start)}  {answered}/s (limit {self.limit:g})  {flight}"
            f"ETA {_clock_text(self.estimate.eta(self.total - self.done))}  errors {self.errors}"
        )

    def advance(self, outcome: Outcome) -> None:
        if outcome.outcome in ("rejected", "failed"):
            self.errors += 1
        self.done += 1
        left = self._left.get(outcome.user_id)
        if left is not None:
            if left <= 1:
                del self._left[outcome.user_id]
                self.users_done += 1
            else:
                self._left[outcome.user_id] = left - 1
        self.estimate.add()


#: seconds between two progress lines off a terminal
LOG_EVERY_S = 30.0


class LogProgress(PushProgress):
    """The push's figures as log lines, for an output that is not a terminal (where a bar is only drawn
    once, at its end): the legend and a first line when the push starts, a line every ``every_s``
    seconds (from a thread of its own, so a stalled push still says so), and a last one when it ends,
    each through ``say``."""

    def __init__(
        self,
        total: int,
        rate: float,
        user_requests: Mapping[str, int] | None,
        say: Callable[[str], object],
        clock: Callable[[], float] = time.monotonic,
        *,
        every_s: float = LOG_EVERY_S,
        label: str = "push",
        legend: bool = True,
        flight: Flight | None = None,
    ) -> None:
        super().__init__(
            total, rate, user_requests, Console(quiet=True), clock, label=label, legend=False, flight=flight
        )
        self._say, self._every, self._label, self._log_legend = say, every_s, label, legend
        self._stop = threading.Event()
        self._ticker = threading.Thread(target=self._tick, name=f"progress-{label}", daemon=True)

    def __enter__(self) -> LogProgress:
        # nothing to push (a sync with nothing changed): the plan's line has said so
        if self.total:
            if self._log_legend:
                self._say(LEGEND)
            self.say_line()
            self._ticker.start()
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        if self._ticker.is_alive():
            self._stop.set()
            self._ticker.join()
            self.say_line()

    def say_line(self) -> None:
        self._say(f"{self._label}: {self._line()}")

    def _tick(self) -> None:
        while not self._stop.wait(self._every):
            self.say_line()


class PlanProgress:
    """A sharded plan's steps as a bar: the split into shards, then each shard analysed and planned,
    the step under way named. A 100M-row plan takes minutes, and nothing else is printed meanwhile.
    Transient: on a terminal it goes once the plan is done (what follows is the plan's table, or an
    error in one line); off a terminal it prints nothing."""

    def __init__(self, shards: int, console: Console | None = None) -> None:
        self.shards = shards
        self._progress = Progress(
            TextColumn("[bold]plan[/]"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=console or Console(stderr=True),
            transient=True,
        )
        self._task = self._progress.add_task(f"splitting the export into {shards} shards", total=shards + 1)

    def __enter__(self) -> PlanProgress:
        # off a terminal even a transient bar leaves an empty line behind
        if self._progress.console.is_terminal:
            self._progress.start()
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        if self._progress.live.is_started:
            self._progress.stop()

    def split_done(self) -> None:
        self._progress.update(self._task, advance=1, description=self._planning(0))

    def shard_done(self, shard: int) -> None:
        """Shard ``shard`` (0-based) is planned."""
        last = shard + 1 >= self.shards
        self._progress.update(self._task, advance=1, description="done" if last else self._planning(shard + 1))

    def _planning(self, shard: int) -> str:
        return f"shard {shard + 1} of {self.shards}: analysing and planning"
