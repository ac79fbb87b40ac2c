#!/usr/bin/env python3
"""Pixel Dice by vessel contrast-to-noise: how much of a `capflow eval` report's Dice loss is frames whose vessels
barely show.

Reads a report folder written by `capflow eval --synth ... --report DIR` (report.json plus the generated frames
and masks it keeps under DIR/data) and, for every image, measures the green-channel contrast of its vessels
against the noise:

  contrast = mean green of a ring 4-8 px around the lumen - mean green of the lumen
  noise    = standard deviation of the 5x5 high-pass of the green channel, away from every vessel (>12 px)

then prints mean Dice per quartile of contrast / noise. Frames whose loops are drawn fainter than the sensor noise
cannot be outlined by any method, so their share of the mean says how far a better model could move it.

Example:
  capflow eval --model builtin --synth --count 150 --looks skin --report /tmp/skin-eval
  .venv/bin/python models/dice_by_contrast.py /tmp/skin-eval
"""

import argparse
import json
import os

import numpy as np
from PIL import Image


def dilate(mask, radius):
    """Binary dilation by a (2r+1)x(2r+1) square, with numpy only."""
    out = mask.copy()
    for _ in range(radius):
        grown = out.copy()
        grown[1:, :] |= out[:-1, :]
        grown[:-1, :] |= out[1:, :]
        grown[:, 1:] |= out[:, :-1]
        grown[:, :-1] |= out[:, 1:]
        grown[1:, 1:] |= out[:-1, :-1]
        grown[1:, :-1] |= out[:-1, 1:]
        grown[:-1, 1:] |= out[1:, :-1]
        grown[:-1, :-1] |= out[1:, 1:]
        out = grown
    return out


def box_mean(plane, size):
    """Mean over a size x size window (edges repeated), with cumulative sums."""
    r = size // 2
    padded = np.pad(plane, r, mode="edge")
    c = padded.cumsum(0).cumsum(1)
    c = np.pad(c, ((1, 0), (1, 0)))
    h, w = plane.shape
    total = c[size:size + h, size:size + w] - c[:h, size:size + w] - c[size:size + h, :w] + c[:h, :w]
    return total / (size * size)


def contrast_to_noise(rgb, mask):
    """(contrast / noise, contrast, noise) of the vessels of one frame; None when it has no vessel."""
    if not mask.any():
        return None
    green = rgb[..., 1].astype(np.float64)
    ring = dilate(mask, 8) & ~dilate(mask, 3)
    far = ~dilate(mask, 12)
    noise = (green - box_mean(green, 5))[far].std()
    contrast = green[ring].mean() - green[mask].mean()
    return contrast / max(noise, 1e-9), contrast, noise


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("report", help="folder written by capflow eval --synth --report")
    ap.add_argument("--groups", type=int, default=4, help="contrast groups (4 = quartiles)")
    args = ap.parse_args()
    report = json.load(open(os.path.join(args.report, "report.json")))
    data = os.path.join(args.report, "data")
    rows = []
    for image in report["images"]:
        rgb = np.asarray(Image.open(os.path.join(data, "images", image["file"])).convert("RGB"))
        mask = np.asarray(Image.open(os.path.join(data, "masks", image["file"])).convert("L")) > 127
        measured = contrast_to_noise(rgb, mask)
        if measured is not None:
            rows.append((image["dice"], *measured))
    if not rows:
        raise SystemExit(f"{args.report}: no image with vessels (is it a `capflow eval --synth` report?)")
    rows = np.array(rows)
    order = np.argsort(rows[:, 1])
    print(f"{len(rows)} images with vessels, mean Dice {rows[:, 0].mean():.3f}; "
          f"correlation of Dice with contrast/noise {np.corrcoef(rows[:, 0], rows[:, 1])[0, 1]:.2f}")
    print("group  contrast/noise   images   mean Dice")
    for g in range(args.groups):
        part = order[g * len(rows) // args.groups:(g + 1) * len(rows) // args.groups]
        if len(part):
            print(f"{g + 1:>5}  {rows[part, 1].min():6.2f}-{rows[part, 1].max():<6.2f}  {len(part):>7}   "
                  f"{rows[part, 0].mean():.3f}")


if __name__ == "__main__":
    main()
