"""tests/ordering.py, the opt-in test order (``-p tests.ordering --order reverse|SEED``)."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

FILES = {"test_a": "abc", "test_b": "de", "test_c": "fgh"}


def _collected(pytester: pytest.Pytester, *order: str) -> list[str]:
    for name, tests in FILES.items():
        pytester.makepyfile(**{name: "".join(f"def test_{t}(): pass\n" for t in tests)})
    result = pytester.runpytest("-p", "tests.ordering", *order, "--collect-only", "-q")
    assert result.ret == 0, result.stdout.str()
    return [line for line in result.stdout.lines if "::" in line]


def test_reverse_runs_the_files_and_each_files_tests_backwards(pytester: pytest.Pytester) -> None:
    assert _collected(pytester, "--order", "reverse") == [
        f"{name}.py::test_{t}" for name in reversed(FILES) for t in reversed(FILES[name])
    ]


def test_a_seed_shuffles_the_same_way_each_time_keeping_each_files_tests_together(
    pytester: pytest.Pytester,
) -> None:
    plain = [f"{name}.py::test_{t}" for name in FILES for t in FILES[name]]
    shuffled = _collected(pytester, "--order", "7")
    assert sorted(shuffled) == sorted(plain) and shuffled != plain
    assert _collected(pytester, "--order", "7") == shuffled
    files = [test.split("::")[0] for test in shuffled]
    runs = [f for i, f in enumerate(files) if i == 0 or files[i - 1] != f]
    assert sorted(runs) == sorted(f"{name}.py" for name in FILES)  # one run of tests per file


def test_the_header_names_the_order_and_a_bad_one_is_a_usage_error(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_one="def test_one(): pass\n")
    result = pytester.runpytest("-p", "tests.ordering", "--order", "12")
    result.stdout.fnmatch_lines(["test order: 12", "*1 passed*"])
    bad = pytester.runpytest("-p", "tests.ordering", "--order", "backwards")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    bad.stderr.fnmatch_lines(["*--order 'backwards': expected 'reverse' or a seed (an integer)"])
