#!/usr/bin/env bash
# Reproduces models/capillary-seg-v1.onnx from a seed on the CPU (`make model`): training environment,
# domain-randomised training/validation frames from `capflow synth --dataset`, training, export, and
# a held-out evaluation with `capflow eval --synth` (seeds never used for training).
set -euo pipefail
cd "$(dirname "$0")/../.."

SEED="${SEED:-1}"
TRAIN_COUNT="${TRAIN_COUNT:-1600}"
VAL_COUNT="${VAL_COUNT:-60}"
STEPS="${STEPS:-32000}"
DATA="${DATA:-.model-data}"
VENV=.venv-train

if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import torch, onnx, PIL" 2>/dev/null; then
  echo "== training environment ($VENV; PyTorch from PyPI, a few GB) =="
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet -r models/train/requirements.txt
fi

echo "== capflow (release) =="
cargo build --release --locked -p capflow --bin capflow
CAPFLOW=target/release/capflow

echo "== data: $TRAIN_COUNT training frames (seed $SEED), $VAL_COUNT validation frames =="
rm -rf "$DATA"
"$CAPFLOW" synth --dataset "$DATA/train" --count "$TRAIN_COUNT" --seed "$SEED" --looks skin,sublingual,nailfold
"$CAPFLOW" synth --dataset "$DATA/val" --count "$VAL_COUNT" --seed $((SEED + 500000)) --looks skin,sublingual,nailfold

echo "== training ($STEPS steps) =="
"$VENV/bin/python" models/train/train.py --data "$DATA/train" --val "$DATA/val" \
  --out models/capillary-seg-v1.onnx --seed "$SEED" --steps "$STEPS" --log models/train/last-training.json

echo "== held-out evaluation (capflow eval --synth, seeds from 1000000) =="
cargo build --release --locked -p capflow --bin capflow
"$CAPFLOW" eval --model models/capillary-seg-v1.toml --synth --count 150 --report "$DATA/report"
echo "report: $DATA/report/report.md"
