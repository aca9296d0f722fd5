"""Opt-in test order, to find a test that passes only because of what an earlier one left
(a module global, a file in a shared fixture's folder, torch's or logging's settings).

Not loaded by default (``make test`` keeps pytest's order): ``python -m pytest -p
tests.ordering --order reverse`` runs the files in reverse and each file's tests in reverse;
``--order SEED`` (an integer) shuffles both with that seed, and the header line names it, so
a failing order is replayed with the same seed. A file's tests stay together, so its
module-scoped fixtures are still built once.
"""

from __future__ import annotations

import random

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--order", default="", metavar="reverse|SEED",
        help="run the files, and each file's tests, in reverse or shuffled with SEED",
    )  # fmt: skip


def _order(config: pytest.Config) -> str:
    order = str(config.getoption("order"))
    if order not in ("", "reverse") and not order.isdigit():
        raise pytest.UsageError(f"--order {order!r}: expected 'reverse' or a seed (an integer)")
    return order


def pytest_report_header(config: pytest.Config) -> str:
    order = _order(config)
    return f"test order: {order or 'as collected'}"


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    order = _order(config)
    if not order:
        return
    files: dict[str, list[pytest.Item]] = {}
    for item in items:
        files.setdefault(str(item.path), []).append(item)
    groups = list(files.values())
    arrange = list.reverse if order == "reverse" else random.Random(int(order)).shuffle
    arrange(groups)
    for group in groups:
        arrange(group)
    items[:] = [item for group in groups for item in group]
