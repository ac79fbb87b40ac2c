#!/usr/bin/env bash
# Regenerates the bundled demo clips in samples/ with `capflow synth` (deterministic: same seeds, same bytes).
set -euo pipefail
cd "$(dirname "$0")/.."
CAPFLOW="${1:-target/release/capflow}"
"$CAPFLOW" synth --preset skin --frames 50 --fps 10 --seed 101 --out samples --name skin-p001
"$CAPFLOW" synth --preset sublingual --frames 75 --fps 25 --seed 202 --out samples --name sublingual-p002-1
"$CAPFLOW" synth --preset sublingual --frames 75 --fps 25 --seed 203 --out samples --name sublingual-p002-2
# Keep only the videos and their ground truth (frames and masks are regenerated on demand).
for d in samples/*/; do rm -rf "$d/frames" "$d/masks"; done
du -sh samples
