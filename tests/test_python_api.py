"""The Python API a notebook uses (``import sslops``). Found by the pyapi review:
``sslops.run``'s task lines went to the process's stderr, which a notebook never shows."""

from __future__ import annotations

import contextlib
import io


def test_run_task_lines_go_to_the_callers_stderr() -> None:
    """A notebook's cell output is ``sys.stderr``; the process's own stderr shows nowhere."""
    from sslops.pipeline.local import _ConsoleFilter

    cell = io.StringIO()
    with contextlib.redirect_stderr(cell):
        console = _ConsoleFilter(io.StringIO())
        console.write("Task 'prepare' finished with status SUCCESS\nerror: bad row\n")
    assert cell.getvalue() == "  [ok] prepare\n  error: bad row\n"
