"""Matplotlib's configuration folder where the home folder cannot hold one.

On a CI runner or in a pod under an arbitrary user id, HOME is often unset, read-only or
missing. Matplotlib then makes a temporary folder itself but warns twice on stderr, in every
process that draws (each stage of ``sslops run``): noise that reads like a fault. The
``sslops`` command gives it the same temporary folder without the warning, before any stage
imports matplotlib (the stages of ``sslops run`` inherit it); a set MPLCONFIGDIR is left
alone, and so is a program that imports sslops.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path


def quiet_config_dir() -> None:
    """Point MPLCONFIGDIR at a temporary folder, removed when this process exits, when the
    home folder is not writable; call before matplotlib is imported."""
    if os.environ.get("MPLCONFIGDIR"):
        return
    try:
        home = Path.home()
    except (RuntimeError, KeyError):  # no HOME and no password-database entry
        home = None
    if home is not None and os.access(home, os.W_OK):
        return
    folder = tempfile.mkdtemp(prefix="sslops-matplotlib-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    os.environ["MPLCONFIGDIR"] = folder
