"""Day-2 operations on an audit registry as it fills: the commands an operator and the
nightly CronJob run, timed and sized at 10, 100 and 1,000 filings.

One real audit bundle (``--bundle``, e.g. ``runs/demo/audit``) is copied into N distinct
signed bundles (a numbered evidence file added, the manifest rewritten and signed with a
bench key), filed into one model's index with ``file_bundle`` (every ``--approve-every``-th
also approved, as a regulated team's nightly + release runs would be), growing the same
registry from one size to the next. At each size, each command runs as its own process
(``python -m sslops``: the CLI with its start-up), and its wall time and peak resident
memory (``os.wait4``) are recorded, with its CPU time:

- ``list``: ``sslops audit list --registry R``
- ``list_json``: ``sslops audit list --registry R --json``
- ``verify``: ``sslops audit list --registry R --verify --public-key issuer.pub.pem``
  (the Helm CronJob's command, with the issuer key it takes from a ConfigMap)
- ``file_one``: ``sslops audit file B --registry R --public-key issuer.pub.pem`` (one more)
- ``approve_one``: ``sslops audit approve SHA --registry R --by bench --key-file approver.pem``

    .venv/bin/python benchmarks/registry_scale_bench.py --bundle runs/demo/audit \
        --sizes 10,100,1000 --out runs/bench/registry_scale.json

Prints one JSON object; ``--out FILE`` also writes it. Needs about 1 MiB of disk per filing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sslops.audit.bundle import bundle_root, sign_manifest, write_manifest
from sslops.audit.registry import decide, file_bundle


def _variant(source: Path, number: int, root: Path, key: Ed25519PrivateKey) -> Path:
    target = root / f"b{number:05d}"
    shutil.copytree(source, target)
    (target / "signature.json").unlink(missing_ok=True)
    (target / "evidence" / "bench.txt").write_text(f"variant {number}\n")
    (target / "manifest.json").unlink()
    write_manifest(target, key)
    sign_manifest(target, key)
    return target


def _pem(key: Ed25519PrivateKey, path: Path) -> Path:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))  # fmt: skip
    return path


def _measure(args: list[str]) -> dict[str, float | int]:
    """Wall seconds, CPU seconds (user + system: less sensitive to other load on the
    machine), peak RSS (MiB) and stdout bytes of ``python -m sslops ARGS``."""
    start = time.perf_counter()
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen([sys.executable, "-m", "sslops", *args], stdout=out,
                                stderr=subprocess.PIPE)  # fmt: skip
        assert proc.stderr is not None
        err = proc.stderr.read()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - start
        size = out.tell()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)}: exit {proc.returncode}: {err.decode()[-400:]}")
    cpu = usage.ru_utime + usage.ru_stime
    return {"s": round(wall, 3), "cpu_s": round(cpu, 3),
            "peak_rss_mib": round(usage.ru_maxrss / 1024, 1), "stdout_bytes": size}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, default=Path("runs/demo/audit"))
    parser.add_argument("--sizes", default="10,100,1000")
    parser.add_argument("--approve-every", type=int, default=5)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    source = bundle_root(args.bundle)
    issuer = Ed25519PrivateKey.generate()
    approver = Ed25519PrivateKey.generate()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "src").mkdir()
        public = root / "issuer.pub.pem"
        public.write_bytes(issuer.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))  # fmt: skip
        approver_pem = _pem(approver, root / "approver.pem")
        registry = root / "registry"
        filed = 0
        for size in sizes:
            start = time.perf_counter()
            while filed < size:
                bundle = _variant(source, filed, root / "src", issuer)
                entry = file_bundle(bundle, registry, model="bench", public_key=issuer.public_key())
                shutil.rmtree(bundle)
                filed += 1
                if filed % args.approve_every == 0:
                    decide(registry, entry["manifest_sha256"], "approved", approver, by="bench")
            building = time.perf_counter() - start
            reg = ["--registry", str(registry)]
            row: dict[str, object] = {"filings": size, "build_s": round(building, 1)}
            row["list"] = _measure(["audit", "list", *reg])
            row["list_json"] = _measure(["audit", "list", *reg, "--json"])
            row["verify"] = _measure(["audit", "list", *reg, "--verify",
                                      "--public-key", str(public)])  # fmt: skip
            one = _variant(source, filed, root / "src", issuer)
            row["file_one"] = _measure(["audit", "file", str(one), *reg, "--model", "bench",
                                        "--public-key", str(public)])  # fmt: skip
            shutil.rmtree(one)
            filed += 1
            index = registry / "models" / "bench" / "index.json"
            last = json.loads(index.read_text())["entries"][-1]["manifest_sha256"]
            row["approve_one"] = _measure(["audit", "approve", last[:16], *reg, "--by", "bench",
                                           "--key-file", str(approver_pem)])  # fmt: skip
            row["index_kib"] = round(index.stat().st_size / 1024, 1)
            row["index_entries"] = len(json.loads(index.read_text())["entries"])
            row["registry_mib"] = round(
                sum(p.stat().st_size for p in registry.rglob("*") if p.is_file()) / 2**20, 1
            )
            row["load_average"] = [round(x, 2) for x in os.getloadavg()]
            print(json.dumps(row), file=sys.stderr)
            results.append(row)
    result = {"bundle": str(args.bundle), "approve_every": args.approve_every, "sizes": results}
    text = json.dumps(result, indent=2) + "\n"
    sys.stdout.write(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()
