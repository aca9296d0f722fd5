"""Progress reporting: a rich progress bar on a terminal, one log line per epoch elsewhere."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class EpochProgress:
    def __init__(self, description: str, total: int, progress: Progress | None) -> None:
        self._description, self._total, self._progress = description, total, progress
        self._task = progress.add_task(description, total=total, status="") if progress else None

    def update(self, done: int, status: str) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, completed=done, status=status)
        else:
            print(f"{self._description} {done}/{self._total} {status}", file=sys.stderr, flush=True)


@contextmanager
def epoch_progress(description: str, total: int) -> Iterator[EpochProgress]:
    if not sys.stderr.isatty():
        yield EpochProgress(description, total, None)
        return
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
    )
    with Progress(*columns, transient=False) as progress:
        yield EpochProgress(description, total, progress)
