"""Reliability suite: the fuzz tests count their cases here; the count is printed at the end."""

from __future__ import annotations

from collections import Counter
from typing import Any

FUZZ_COUNTS: Counter[str] = Counter()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if FUZZ_COUNTS:
        terminalreporter.section("fuzzed cases")
        for name, count in sorted(FUZZ_COUNTS.items()):
            terminalreporter.write_line(f"{name}: {count}")
        total = sum(v for k, v in FUZZ_COUNTS.items() if k.endswith(" cases"))  # not draws
        terminalreporter.write_line(f"total cases: {total}")
