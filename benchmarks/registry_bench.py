"""Audit registry at scale: filing, listing and verifying N bundles, against the bare floor.

N distinct bundles are made from one audit bundle (a numbered evidence file added and the
manifest rewritten, unsigned), then, in one run:

- ``file``: ``sslops.audit.registry.file_bundle`` for each (verify, zip, fsync, index);
- the floor (anchor): what any archive must do at least, zip the folder, copy it and hash
  the copy (``write_zip`` + ``shutil.copyfile`` + ``sha256``);
- ``list``: ``list_registry`` (the index files only);
- ``verify``: ``check_registry`` (every bundle re-hashed, every entry checked, the chains);
- ``approve``: one signed decision per bundle.

    .venv/bin/python benchmarks/registry_bench.py --bundle runs/demo/audit --count 200

Prints one JSON object; ``--out FILE`` also writes it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import tempfile
import time
from pathlib import Path

from sslops.audit.bundle import bundle_root, write_manifest, write_zip
from sslops.audit.registry import check_registry, decide, file_bundle, list_registry


def _variants(source: Path, count: int, root: Path) -> list[Path]:
    made = []
    for i in range(count):
        target = root / f"b{i:04d}"
        shutil.copytree(source, target)
        (target / "evidence" / "bench.txt").write_text(f"variant {i}\n")
        (target / "manifest.json").unlink()
        write_manifest(target)
        made.append(target)
    return made


def _floor(bundles: list[Path], root: Path) -> float:
    start = time.perf_counter()
    for i, bundle in enumerate(bundles):
        packed = root / f"z{i:04d}.zip"
        write_zip(bundle, packed)
        copy = root / f"c{i:04d}.zip"
        shutil.copyfile(packed, copy)
        hashlib.sha256(copy.read_bytes()).hexdigest()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, default=Path("runs/demo/audit"))
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        bundles = _variants(bundle_root(args.bundle), args.count, root / "src")
        (root / "floor").mkdir()
        floor = _floor(bundles, root / "floor")
        registry = root / "registry"
        start = time.perf_counter()
        for bundle in bundles:
            file_bundle(bundle, registry, model="bench")
        filing = time.perf_counter() - start
        start = time.perf_counter()
        rows = list_registry(registry)
        listing = time.perf_counter() - start
        key = Ed25519PrivateKey.generate()
        start = time.perf_counter()
        for row in rows:
            decide(registry, row["manifest_sha256"], "approved", key, by="bench")
        approving = time.perf_counter() - start
        start = time.perf_counter()
        problems = check_registry(registry)
        verifying = time.perf_counter() - start
        size = sum(p.stat().st_size for p in (registry / "bundles").glob("*.zip"))
    result = {
        "bundles": args.count,
        "registry_mib": round(size / 2**20, 1),
        "file_s_per_bundle": round(filing / args.count, 4),
        "floor_s_per_bundle": round(floor / args.count, 4),
        "file_vs_floor": round(filing / floor, 2),
        "list_s": round(listing, 3),
        "approve_s_per_bundle": round(approving / args.count, 4),
        "verify_s": round(verifying, 2),
        "verify_mib_per_s": round(size / 2**20 / verifying, 1),
        "problems": problems,
    }
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
