#!/usr/bin/env python3
"""Evaluate capillary-classical-v1 (or any model with the same contract) against ground-truth masks.

  .venv/bin/python models/eval_classical.py --frames DIR --masks DIR [--um-per-px 2.2] [--eval-at model|frame]
                                            [--min-area-um2 A --max-area-um2 B] [--model M.onnx]

Frames and masks are same-named PNGs.  The model runs with onnxruntime on the green channel of each frame
(luma for grayscale frames) scaled by 1/255.  If --um-per-px differs from the model card's pixel size
(e.g. sublingual frames at 1.5 um/px), the frame is resized (bilinear) to the model's pixel size first, as
the pipeline does, and with --eval-at model (default) the mask is resized the same way (bilinear, > 127)
and everything is scored on the model's grid; --eval-at frame resizes the probability map back instead and
scores at the frame's own resolution.  Prediction = prob >= threshold (card: 0.5).  Mask foreground =
pixel > 127 (first channel for colour masks).

Per image and on average it prints:
  dice, iou      pixel Dice / IoU of the thresholded prediction vs the mask (all pixels, no size filter)
  n_pred, n_gt   number of 8-connected components with area in [min, max] um^2 (prediction / mask)
  count_err      |n_pred - n_gt|
  af_pred, af_gt area fraction = pixels of the counted components / all pixels
  af_err         |af_pred - af_gt|
Defaults for threshold and the area range come from capillary-classical-v1.toml.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import classical_common as cc  # noqa: E402


def load_mask(path: str) -> np.ndarray:
    m = np.asarray(Image.open(path))
    if m.ndim == 3:
        m = m[..., 0]
    if m.dtype != np.uint8:
        m = m.astype(np.float64)
        if m.max() <= 1.0:
            m = m * 255.0
    return m > 127


def resize_to_model(green: np.ndarray, mask: np.ndarray, frame_um: float, model_um: float):
    """Frame and mask resized (bilinear; mask re-thresholded at 127) from frame_um to model_um per pixel."""
    h, w = green.shape
    f = frame_um / model_um
    size = (max(1, round(w * f)), max(1, round(h * f)))
    g = np.asarray(Image.fromarray(green).resize(size, Image.BILINEAR))
    m = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize(size, Image.BILINEAR)) > 127
    return g, m


def main() -> int:
    card = cc.load_card()
    model_um, thr0, amin0, amax0 = cc.card_defaults(card)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", required=True)
    ap.add_argument("--masks", required=True)
    ap.add_argument("--model", default=cc.DEFAULT_MODEL)
    ap.add_argument("--um-per-px", type=float, default=model_um, help="pixel size of frames and masks")
    ap.add_argument("--threshold", type=float, default=thr0)
    ap.add_argument("--min-area-um2", type=float, default=amin0)
    ap.add_argument("--max-area-um2", type=float, default=amax0)
    ap.add_argument("--eval-at", choices=("model", "frame"), default="model",
                    help="score on the model's pixel grid (frame and mask resized) or at the frame's resolution")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    rescale = abs(a.um_per_px - model_um) > 1e-6 and a.eval_at == "model"

    names = [n for n in cc.list_pngs(a.frames) if os.path.exists(os.path.join(a.masks, n))]
    missing = len(cc.list_pngs(a.frames)) - len(names)
    if not names:
        print(f"no frame in {a.frames} has a same-named mask in {a.masks}", file=sys.stderr)
        return 2
    sess = cc.make_session(a.model, a.threads)
    print(f"model={os.path.basename(a.model)} threshold={a.threshold} area=[{a.min_area_um2}, {a.max_area_um2}] um^2 "
          f"um/px={a.um_per_px} eval_at={a.eval_at if rescale else 'frame'} images={len(names)}" + (f" (skipped {missing} without mask)" if missing else ""))
    hdr = (f"{'file':<28} {'dice':>6} {'iou':>6} {'n_pred':>6} {'n_gt':>5} {'cnt_err':>7} "
           f"{'af_pred':>8} {'af_gt':>8} {'af_err':>8} {'ms':>6}")
    print(hdr)
    rows = []
    for name in names:
        green = cc.load_green(os.path.join(a.frames, name))
        gt = load_mask(os.path.join(a.masks, name))
        if gt.shape != green.shape:
            print(f"{name}: mask shape {gt.shape} != frame shape {green.shape}; skipped", file=sys.stderr)
            continue
        um = a.um_per_px
        if rescale:
            green, gt = resize_to_model(green, gt, a.um_per_px, model_um)
            um = model_um
        t0 = time.perf_counter()
        prob = cc.predict(sess, green, um, model_um)
        ms = (time.perf_counter() - t0) * 1e3
        pred = prob >= a.threshold
        inter = float(np.logical_and(pred, gt).sum())
        ps, gs = float(pred.sum()), float(gt.sum())
        union = ps + gs - inter
        dice = 1.0 if ps + gs == 0 else 2.0 * inter / (ps + gs)
        iou = 1.0 if union == 0 else inter / union
        n_p, af_p, _, _ = cc.count_and_fraction(pred, um, a.min_area_um2, a.max_area_um2)
        n_g, af_g, _, _ = cc.count_and_fraction(gt, um, a.min_area_um2, a.max_area_um2)
        r = (dice, iou, n_p, n_g, abs(n_p - n_g), af_p, af_g, abs(af_p - af_g), ms)
        rows.append(r)
        print(f"{name:<28} {dice:>6.3f} {iou:>6.3f} {n_p:>6d} {n_g:>5d} {abs(n_p - n_g):>7d} "
              f"{af_p:>8.4f} {af_g:>8.4f} {abs(af_p - af_g):>8.4f} {ms:>6.1f}")
    if not rows:
        return 2
    m = np.mean(np.array(rows, dtype=np.float64), axis=0)
    print(f"{'mean':<28} {m[0]:>6.3f} {m[1]:>6.3f} {m[2]:>6.1f} {m[3]:>5.1f} {m[4]:>7.2f} "
          f"{m[5]:>8.4f} {m[6]:>8.4f} {m[7]:>8.4f} {m[8]:>6.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
