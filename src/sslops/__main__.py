"""``python -m sslops``: the same as the ``sslops`` command (for environments without the
console script on PATH, e.g. ``.venv/bin/python -m sslops run ...``)."""

import sys

from sslops.cli import main

sys.exit(main())
