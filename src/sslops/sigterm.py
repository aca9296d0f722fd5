"""SIGTERM handled as Ctrl-C is: how CI runners, Kubernetes, ``docker stop``, ``timeout`` and
schedulers stop a job.

Without a handler Python dies on SIGTERM at once: no stage's temporary folder is removed,
the tasks ``sslops run`` started keep running (and writing) as orphans, and a process that is
PID 1 in a container ignores the signal altogether. Under :func:`sigterm_as_interrupt` the
signal is passed on to the command's own child processes and raised as :class:`Terminated`,
a ``KeyboardInterrupt``, so every clean-up that runs on Ctrl-C runs on it too. SIGINT sent
to the command alone (not its process group) is passed on to its children as well.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType

# 128 + the signal's number, as a shell reports a process that the signal ended.
EXIT_SIGINT, EXIT_SIGTERM = 128 + signal.SIGINT, 128 + signal.SIGTERM


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived: unwind as for Ctrl-C, then exit with status 143."""


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children, their children, ...), from /proc; none where
    there is no /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # "pid (comm) state ppid ...": comm may hold spaces and parentheses
            fields = stat.read_text(encoding="utf-8", errors="replace").rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):  # the process ended meanwhile
            continue
    found, queue = [], [pid]
    while queue:
        below = children.get(queue.pop(), [])
        found += below
        queue += below
    return found


def _running(pid: int) -> bool:
    """``pid`` is a process that has not ended (a zombie has: it waits to be reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[:1] != ["Z"]


def stop_descendants_with(entry: str, wait_seconds: float = 10.0) -> list[int]:
    """SIGTERM to the processes below this one whose environment holds ``entry``
    (``KEY=value``), then wait up to ``wait_seconds`` for them to end; returns their ids.

    For the API's ``sslops.run`` in a notebook: an interrupt that reaches the kernel alone
    (a frontend's stop button signalling its process, ``kill -INT``) leaves the running
    kfp.local task writing on as an orphan. The kernel's other children (the notebook's
    own subprocesses, a cluster's workers) do not hold the run's ``entry`` and are left
    alone, where :func:`sigterm_as_interrupt` (the CLI's) stops every child."""
    needle = entry.encode()
    found = []
    for pid in descendants(os.getpid()):
        try:
            environment = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:  # ended meanwhile, or not ours to read
            continue
        if needle in environment:
            found.append(pid)
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + wait_seconds
    while any(_running(pid) for pid in found) and time.monotonic() < deadline:
        time.sleep(0.05)
    return found


def _stop_children() -> None:
    for child in descendants(os.getpid()):
        with contextlib.suppress(OSError):  # ended meanwhile, or not ours to signal
            os.kill(child, signal.SIGTERM)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    # A second SIGTERM while unwinding would cut a clean-up short; SIGKILL still ends it.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _stop_children()
    raise Terminated


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    # Ctrl-C in a terminal reaches the whole process group, but `kill -INT PID`, a
    # supervisor or an IDE's stop button signals this process alone: its children (sslops
    # run's kfp.local tasks) would go on running, and writing, as orphans.
    _stop_children()
    raise KeyboardInterrupt


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM stops the command's children and raises :class:`Terminated`,
    and SIGINT stops them too before it raises ``KeyboardInterrupt`` as usual (unless SIGINT
    is ignored, as in a shell's background job: then it stays ignored). Only in the main
    thread, where Python runs signal handlers; elsewhere nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    interrupt = signal.getsignal(signal.SIGINT)
    if interrupt is signal.default_int_handler:
        signal.signal(signal.SIGINT, _on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        if interrupt is signal.default_int_handler:
            signal.signal(signal.SIGINT, interrupt)


@contextlib.contextmanager
def sigterm_flag() -> Iterator[Callable[[], bool]]:
    """Within the block, SIGTERM only raises a flag; yields the function that reads it.

    For a loop that stops at its next safe point (pretraining: after the optimizer step,
    with a checkpoint) instead of where the signal lands. Outside the main thread nothing
    changes and the flag stays down."""
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return
    received: list[int] = []

    def raise_flag(signum: int, frame: FrameType | None) -> None:
        received.append(signum)

    previous = signal.signal(signal.SIGTERM, raise_flag)
    try:
        yield lambda: bool(received)
    finally:
        signal.signal(signal.SIGTERM, previous)
