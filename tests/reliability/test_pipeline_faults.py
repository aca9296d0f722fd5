"""``sslops run`` under faults: killed mid-pipeline, four runs at once, secrets in the environment.

All runs use the small Adult sample and the fast overrides; the reference is one
sequential run with a signing key and fake storage credentials in its environment.

- Killed: the whole process group of a run is SIGKILLed once ``finetune`` has finished
  (the trigger is its entry in the stage cache, not a time). Running the same command
  again reuses the finished stages (their ``meta.json`` is byte-identical to the killed
  run's), reruns the rest and ends with the reference's results; nothing the killed run
  left behind remains.
- Concurrent: four runs into four folders at once all succeed with the reference's
  results.
- Secrets: neither the private key nor the credentials appear in any output file
  (zip members included), the run log or the console.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import time
import zipfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.conftest import FAST_OVERRIDES

pytestmark = pytest.mark.reliability

DETERMINISTIC = ("prepare", "pretrain", "finetune", "evaluate", "export")
# files with seconds and samples/s in them
TIMED = {"pretrain": {"summary.json", "history.jsonl", "history.json", "metrics.jsonl"}}
FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "AKIAFAKERELIABILITY7",
    "AWS_SECRET_ACCESS_KEY": "fake/SecretAccessKey+reliability+test+0123456789",
    "AZURE_STORAGE_KEY": "ZmFrZS1henVyZS1zdG9yYWdlLWtleS1mb3ItcmVsaWFiaWxpdHk=",
    "MINIO_ROOT_PASSWORD": "fake-minio-root-password-4242",
}


@pytest.fixture(scope="module")
def signing_key() -> str:
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return pem.decode()


@pytest.fixture(scope="module")
def env(signing_key: str) -> dict[str, str]:
    from tests.conftest import BIN

    path = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    return {**os.environ, "PATH": path, "SSLOPS_SIGNING_KEY": signing_key, **FAKE_CREDENTIALS}


def run_command(config: Path, out: Path) -> list[str]:
    args = ["sslops", "run", "--config", str(config), "--out", str(out)]
    for override in [*FAST_OVERRIDES, "audit.signing.required=true"]:
        args += ["--set", override]
    return args


@pytest.fixture(scope="module")
def config(small_data: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    import yaml

    from tests.conftest import small_config_dict

    path = tmp_path_factory.mktemp("pipeline-faults") / "small.yaml"
    path.write_text(yaml.safe_dump(small_config_dict(small_data)))
    return path


@pytest.fixture(scope="module")
def reference(
    config: Path, env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, subprocess.CompletedProcess[str]]:
    out = tmp_path_factory.mktemp("reference") / "run"
    done = subprocess.run(
        run_command(config, out), capture_output=True, text=True, env=env, timeout=900
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return out, done


def results(out: Path) -> dict[str, object]:
    """What must not depend on how the run got there: the sha256 of every file of the
    deterministic stages (pretrain's timing files: their contents without the timings),
    the run summary's numbers (not its stage timings) and the audit gates."""
    files = {
        stage: {
            name: digest
            for name, digest in json.loads((out / stage / "meta.json").read_text())["files"].items()
            if name not in TIMED.get(stage, set())
        }
        for stage in DETERMINISTIC
    }
    pretrain = out / "pretrain"
    rows = [json.loads((pretrain / "summary.json").read_text())] + [
        json.loads(line)
        for name in ("history.jsonl", "metrics.jsonl")
        for line in (pretrain / name).read_text().splitlines()
    ]
    untimed = [
        {k: v for k, v in row.items() if k not in {"samples_per_s", "seconds"}} for row in rows
    ]
    summary = json.loads((out / "summary.json").read_text().replace(str(out), "OUT"))
    summary.pop("stages")  # each task's start and wall time, and whether it was reused
    return {"files": files, "pretrain": untimed, "summary": summary}


def assert_clean_siblings(out: Path) -> None:
    left = sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))
    assert left == [], left


def test_killed_run_reuses_finished_stages_and_ends_like_an_uninterrupted_run(
    config: Path, env: dict[str, str], reference: tuple[Path, object], tmp_path: Path
) -> None:
    out = tmp_path / "run"
    stages = tmp_path / ".run.stages"
    process = subprocess.Popen(
        run_command(config, out), env=env, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 600
    while not list(stages.glob("finetune-*")) and process.poll() is None:
        assert time.monotonic() < deadline, "finetune never finished"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)  # the CLI and its running task, as a pod kill does
    process.wait()
    assert not out.exists(), "the killed run must not have produced its output folder"
    assert list(tmp_path.glob(".run.partial-*")), "the kill landed after the run finished"
    finished = {
        p.name.split("-")[0]: p
        for p in stages.iterdir()
        if p.is_dir() and not p.name.startswith(".")
    }  # not <stage>.key.json
    assert {"prepare", "pretrain", "finetune"} <= set(finished)
    before = {stage: (path / "meta.json").read_bytes() for stage, path in finished.items()}

    done = subprocess.run(
        run_command(config, out), capture_output=True, text=True, env=env, timeout=900
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for stage, meta in before.items():
        assert f"reused {stage}" in done.stderr
        assert (out / stage / "meta.json").read_bytes() == meta, f"{stage} was not reused"
    for stage in set(DETERMINISTIC) - set(before):
        assert f"reused {stage}" not in done.stderr
    assert results(out) == results(reference[0])
    assert_clean_siblings(out)  # the staging folder of the killed run and the cache are gone


def test_four_runs_at_once_match_the_sequential_run(
    config: Path, env: dict[str, str], reference: tuple[Path, object], tmp_path: Path
) -> None:
    outs = [tmp_path / f"run{i}" for i in range(4)]
    processes = [
        subprocess.Popen(
            run_command(config, out),
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for out in outs
    ]
    for process in processes:
        _, stderr = process.communicate(timeout=1200)
        assert process.returncode == 0, stderr[-3000:]
    expected = results(reference[0])
    for out in outs:
        assert results(out) == expected, out
        assert_clean_siblings(out)


def _contents(path: Path) -> list[tuple[str, bytes]]:
    data = path.read_bytes()
    found = [(str(path), data)]
    if zipfile.is_zipfile(io.BytesIO(data)):
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            found += [(f"{path}!{name}", archive.read(name)) for name in archive.namelist()]
    return found


def test_signing_key_and_credentials_never_reach_outputs_or_logs(
    reference: tuple[Path, subprocess.CompletedProcess[str]], signing_key: str
) -> None:
    out, done = reference
    assert json.loads((out / "summary.json").read_text())["audit"]["signed"] is True
    key_lines = [line for line in signing_key.splitlines() if "-----" not in line]
    secrets = [*key_lines, *FAKE_CREDENTIALS.values()]
    scanned = [("stdout", done.stdout.encode()), ("stderr", done.stderr.encode())]
    for path in sorted(out.rglob("*")):
        if path.is_file():
            scanned += _contents(path)
    assert any(name.endswith("run.log") for name, _ in scanned)
    assert sum(name.count("!") for name, _ in scanned) > 10, "the bundle zip was not opened"
    for name, content in scanned:
        for secret in secrets:
            assert secret.encode() not in content, f"a secret appears in {name}"


def test_unwritable_output_folder_is_one_clean_error(
    config: Path, env: dict[str, str], tmp_path: Path
) -> None:
    from tests.reliability.faults import read_only_folder

    with read_only_folder(tmp_path / "locked") as locked:
        done = subprocess.run(
            run_command(config, locked / "run"),
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
        assert not list(locked.iterdir())
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert str(locked) in lines[0]


def test_a_run_failing_late_names_the_stages_it_keeps_for_the_rerun(
    config: Path, env: dict[str, str], tmp_path: Path
) -> None:
    """A policy gate fails the audit, the last stage: the error says where the finished
    stages wait for a rerun (a hidden folder beside --out), and nothing else is left."""
    out = tmp_path / "run"
    command = [*run_command(config, out), "--set", "audit.gates.min_auc=0.999"]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 3, done.stderr[-3000:]  # a failed gate, not bad input (2)
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: policy gate failed") and "min_auc" in last
    stages = tmp_path / ".run.stages"
    assert f"the stages that finished are kept in {stages}, so a rerun into {out}" in last
    assert f"(full log: {tmp_path / '.run.failed.log'})" in last
    assert {p.name.split("-")[0] for p in stages.iterdir()} >= set(DETERMINISTIC)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".run.failed.log", ".run.stages"]
