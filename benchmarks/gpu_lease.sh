#!/usr/bin/env bash
# The one prepared run for a lent GPU (issue 4), written to fit a 15-minute device lease.
#
#   bash benchmarks/gpu_lease.sh OUT_DIR [cuda|cpu] [SSL_SECONDS]
#
# 1. benchmarks/gpu_pretrain.py under torchrun: images/s and share of the bf16 peak for
#    SimCLR ResNet-18 and MAE ViT-Tiny (sslops' real training loop).
# 2. benchmarks/pretrain_simclr_vs_lightly.py on the device: the supervised ResNet-18 baseline
#    (--phase supervised) and then sslops' SimCLR linear probe (--phase quality --sslops-only),
#    the same 3 label draws at 1% and 10%, in one JSON. The SimCLR budget is SSL_SECONDS of
#    training at the throughput step 1 measured (bounded to 20..2000 epochs of 4,000 images).
# Each step has its own timeout and writes its own files, so a stopped step keeps the rest.
# On the device machine the command is run with python3 (its image's torch) and pydantic
# carried as wheels; see docs/benchmarks.md for the exact call.
set -u
out=${1:?usage: gpu_lease.sh OUT_DIR [cuda|cpu] [SSL_SECONDS]}
device=${2:-cuda}
ssl_seconds=${3:-200}
ssl_epochs=${4:-}  # overrides the budget: a fixed number of SimCLR epochs
py=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
mkdir -p "$out"
start=$SECONDS

{
    date -u
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1
    "$py" -c 'import sys, torch; print(sys.version); print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())'
} >"$out/env.txt" 2>&1
cat "$out/env.txt"

if [ "$device" = cuda ]; then
    bench_args=()
else  # the CPU check of this script: tiny steps, gloo
    bench_args=(--device cpu --batch 16 --steps 3 --warmup 1)
fi
echo "== 1. gpu_pretrain (t=$((SECONDS - start)) s)"
timeout 180 "$py" -m torch.distributed.run --standalone --nproc-per-node 1 \
    benchmarks/gpu_pretrain.py --out "$out/gpu_pretrain.json" "${bench_args[@]}" ${BENCH_ARGS:-} \
    >"$out/gpu_pretrain.log" 2>&1
echo "rc $?"; tail -n 5 "$out/gpu_pretrain.log"

# SimCLR epochs for the budget: 4,000 images per epoch at 0.7x the batch-512 rate of step 1
# (the probe trains at batch 256: more steps, more per-step overhead).
epochs=$("$py" - "$out/gpu_pretrain.json" "$ssl_seconds" <<'EOF'
import json, sys
try:
    rows = json.load(open(sys.argv[1]))["results"]
    rate = next(r["images_per_s"] for r in rows if r["workload"] == "simclr_resnet18")
except Exception:
    rate = 2000.0
print(max(20, min(2000, int(0.7 * rate * float(sys.argv[2]) / 4000))))
EOF
)
if [ -n "$ssl_epochs" ]; then epochs=$ssl_epochs; fi
probe=(benchmarks/pretrain_simclr_vs_lightly.py --recipe digits --draws 3 --device "$device"
       --threads 8 --out "$out/probe.json" --save-features "$out/features.npz")
if [ "$device" = cpu ]; then probe+=(--supervised-epochs 1 1 --draws 1 --threads 2); fi

echo "== 2a. supervised ResNet-18 baseline (t=$((SECONDS - start)) s)"
timeout 120 "$py" "${probe[@]}" --phase supervised >"$out/supervised.log" 2>&1
echo "rc $?"; grep -E "^supervised" "$out/supervised.log"

echo "== 2b. sslops SimCLR, $epochs epochs, then the linear probe (t=$((SECONDS - start)) s)"
timeout $((ssl_seconds * 2 + 60)) "$py" "${probe[@]}" --phase quality --sslops-only \
    --ssl-epochs "$epochs" >"$out/probe.log" 2>&1
echo "rc $?"; grep -E "^(kNN|1%|10%)" "$out/probe.log"
if [ -n "${COMPILE_SECONDS:-}" ]; then  # optional: the same throughput with torch.compile
    echo "== 3. gpu_pretrain --compile (t=$((SECONDS - start)) s)"
    timeout "$COMPILE_SECONDS" "$py" -m torch.distributed.run --standalone --nproc-per-node 1 \
        benchmarks/gpu_pretrain.py --out "$out/gpu_pretrain_compile.json" --compile \
        "${bench_args[@]}" ${BENCH_ARGS:-} >"$out/gpu_pretrain_compile.log" 2>&1
    echo "rc $?"; tail -n 2 "$out/gpu_pretrain_compile.log"
fi
echo "== done (t=$((SECONDS - start)) s)"
