"""Schedules and the clock (found by the clock review): a recurring batch-scoring run whose
published file is named by the UTC date fires at most once a day."""

from __future__ import annotations

import pytest

from sslops.cli import main
from sslops.k8s.schedule import runs_per_day
from tests.test_shadow import CONFIG, FakeKfpWithSchedules


@pytest.mark.parametrize(
    ("cron", "runs"),
    [
        ("0 0 2 * * *", 1),
        ("0 30 5 * * 1-5", 1),
        ("0 0 0/24 * * *", 1),  # a step past the highest hour: only the start matches
        ("0 0 */6 * * *", 4),
        ("0 0,30 2 * * *", 2),
        ("0 0 2-3 * * *", 2),
        ("0 0 20/2 * * *", 2),  # 20 and 22: a/n runs from a to the highest value
        ("* 0 2 * * *", 60),
    ],
)
def test_runs_per_day_counts_what_the_cron_fires_on_one_day(cron: str, runs: int) -> None:
    assert runs_per_day(cron) == runs


def test_a_dated_out_is_refused_for_a_cron_that_fires_more_than_once_a_day(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``{date}`` is the run's UTC date: the 06:00 run would silently replace the file the
    00:00 run published (check_output accepts earlier predictions as replaceable)."""
    kfp_api = FakeKfpWithSchedules()  # a stand-in KFP API
    try:
        args = ["schedule-predict", "--config", str(CONFIG), "--host", kfp_api.host,
                "--cron", "0 0 */6 * * *", "--model", "/workspace/model.onnx",
                "--data", "/workspace/incoming", "--out", "/workspace/predictions/{date}.csv"]  # fmt: skip
        assert main(args) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1, err
        assert "fires 4 times a day" in err and "{date}" in err and "replace" in err, err
        assert kfp_api.recurring == [] and kfp_api.uploads == []  # refused before any upload
        # Without --out every run keeps its own artifact: several a day are fine.
        assert main(args[:-2]) == 0
        assert kfp_api.recurring[0]["trigger"]["cron_schedule"]["cron"] == "0 0 */6 * * *"
    finally:
        kfp_api.server.shutdown()
        kfp_api.server.server_close()
