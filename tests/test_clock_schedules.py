"""Schedules and the clock (found by the clock review): a recurring batch-scoring run whose
published file is named by the UTC date fires at most once a day, and the chart's registry
verification runs in a named time zone, not whatever zone the controller happens to run in."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from sslops.cli import main
from sslops.k8s.schedule import runs_per_day
from sslops.k8s.validation import validate_object
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


def test_the_registry_verification_cronjob_runs_in_utc(tmp_path: Path) -> None:
    """Without ``timeZone`` a CronJob's schedule is read in the kube-controller-manager's
    local zone: "0 3 * * *" is 03:00 UTC on one cluster, 03:00 Europe/Berlin on another,
    and on a zone with daylight saving time it moves by an hour twice a year."""
    pytest.importorskip("helm_python")
    from tests.test_k8s_audit_registry import COMPONENT, ENABLED, _cronjobs

    [cronjob] = _cronjobs(ENABLED, tmp_path)
    assert cronjob["spec"]["timeZone"] == "Etc/UTC"
    assert validate_object(cronjob, {}) == "kubernetes"
    # The kustomize component says the same (test_k8s_audit_registry compares the two
    # built objects where kubectl is installed; this holds without it).
    [component] = yaml.safe_load_all((COMPONENT / "cronjob.yaml").read_text())
    assert component["spec"]["timeZone"] == "Etc/UTC"
