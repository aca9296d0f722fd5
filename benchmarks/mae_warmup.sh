#!/usr/bin/env bash
# MAE (ViT-Tiny) on MNIST-5k with and without the default learning-rate warmup
# (pretrain.warmup_epochs: 5% of the epochs for mae). Prints final loss and kNN accuracy.
# Usage: benchmarks/mae_warmup.sh [EPOCHS] [LEARNING_RATE] [OUT]   (~10-15 min a run on 2 cores)
set -euo pipefail
epochs=${1:-8}; lr=${2:-0.0015}; out=${3:-runs/mae-warmup}
sslops=${SSLOPS:-.venv/bin/sslops}
mkdir -p "$out"
[ -f "$out/prepared/schema.json" ] || $sslops prepare --config configs/mnist.yaml --out "$out/prepared"
for warmup in none default; do
  extra=(); [ "$warmup" = none ] && extra=(--set pretrain.warmup_epochs=0)
  rm -rf "$out/$warmup" "$out/$warmup.checkpoints"
  $sslops pretrain --config configs/mnist.yaml --set pretrain.objective=mae \
    --set pretrain.backbone=vit_tiny --set pretrain.epochs="$epochs" \
    --set pretrain.learning_rate="$lr" --set pretrain.threads=0 --set pretrain.resume=false \
    "${extra[@]}" --prepared "$out/prepared" --out "$out/$warmup" >"$out/$warmup.log" 2>&1
  python3 -c "import json,sys; s=json.load(open(sys.argv[1])); print(f'warmup {sys.argv[2]:8s} final loss {s[\"final_loss\"]:.4f}  kNN {s[\"knn_initial\"]} -> {s[\"knn_accuracy\"]}  {s[\"seconds\"]:.0f} s')" "$out/$warmup/summary.json" "$warmup"
done
