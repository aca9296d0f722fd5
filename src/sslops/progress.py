"""Progress reporting: a rich progress bar on a terminal, one log line per step elsewhere
(pretraining epochs, the fine-tuning sweep's phases, the label-efficiency draws).

A line reads ``<stage> (<what>) <done>/<total> <status>``: ``sslops run`` shows exactly
those lines of its stages' logs on the console."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

# What sslops run echoes from a stage's log: a line TaskProgress prints.
PROGRESS_LINE = re.compile(r"^(pretrain|finetune|evaluate) \([^)]*\) \d+/\d+")


class TaskProgress:
    def __init__(self, description: str, total: int, progress: Progress | None) -> None:
        self._description, self._total, self._progress = description, total, progress
        self._task = progress.add_task(description, total=total, status="") if progress else None

    def update(self, done: int, status: str) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, completed=done, status=status)
        else:
            print(f"{self._description} {done}/{self._total} {status}", file=sys.stderr, flush=True)


@contextmanager
def task_progress(description: str, total: int) -> Iterator[TaskProgress]:
    if not sys.stderr.isatty():
        yield TaskProgress(description, total, None)
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
        yield TaskProgress(description, total, progress)
