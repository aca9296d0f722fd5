"""One torchrun rank of ``python -m sslops.pretrain`` that can SIGKILL itself (tests only).

With ``SSLOPS_TEST_KILL_RANK=r`` and ``SSLOPS_TEST_KILL_AT=n``, rank r kills itself with
SIGKILL when it builds the views of the n-th optimizer step of this attempt, on each of
the first ``SSLOPS_TEST_KILLS`` attempts (torchrun counts them in
``TORCHELASTIC_RESTART_COUNT``). The trigger is a step, not a time, so the kill always
lands at the same point of training. Every start is appended to ``SSLOPS_TEST_KILL_LOG``.

``SSLOPS_TEST_KILL_SIGNAL=SIGTERM`` sends that signal instead, and
``SSLOPS_TEST_KILL_TARGET=parent`` sends it to the parent process (torchrun, as the
kubelet does to a pod's first process) instead of the rank itself. Run alone (no
``RANK``), the process is rank 0.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

import sslops.pretrain.loop as loop
from sslops.pretrain.__main__ import main

_calls = 0


def _arm(rank: str) -> None:
    attempt = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    with open(os.environ["SSLOPS_TEST_KILL_LOG"], "a", encoding="utf-8") as log:
        log.write(f"rank {rank} attempt {attempt}\n")
    if rank != os.environ.get("SSLOPS_TEST_KILL_RANK") or attempt >= int(
        os.environ.get("SSLOPS_TEST_KILLS", "0")
    ):
        return
    kill_at, real = int(os.environ["SSLOPS_TEST_KILL_AT"]), loop.Draws

    def draws(*args: Any, **kwargs: Any) -> Any:
        global _calls
        _calls += 1
        if _calls == kill_at:
            target = os.getppid() if os.environ.get("SSLOPS_TEST_KILL_TARGET") == "parent" else 0
            name = os.environ.get("SSLOPS_TEST_KILL_SIGNAL", "SIGKILL")
            os.kill(target or os.getpid(), signal.Signals[name])
        return real(*args, **kwargs)

    loop.Draws = draws  # type: ignore[assignment,misc]


if __name__ == "__main__":
    _arm(os.environ.get("RANK", "0"))
    sys.exit(main())
