#!/usr/bin/env python3
"""Draw what capillary-classical-v1 finds over each frame.

  .venv/bin/python models/overlay.py --frames DIR --out DIR [--um-per-px 2.2] [--model M.onnx]
                                     [--min-area-um2 A --max-area-um2 B] [--threshold 0.5]

For every PNG frame in --frames writes --out/<name> with
  * a 1-px yellow outline of the thresholded probability mask (prob >= threshold),
  * a cyan bounding box around every counted component (8-connected, area within [min, max] um^2),
  * a red bounding box around components larger than the max area (rejected: hairs, shadows ...),
and prints per-frame count and area fraction (counted component pixels / frame pixels).
Defaults for threshold and area range come from the model card (capillary-classical-v1.toml).
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

YELLOW = np.array([255, 255, 0], np.uint8)
CYAN = (0, 255, 255)
RED = (255, 40, 40)


def outline(mask: np.ndarray) -> np.ndarray:
    """Pixels of the mask with at least one 4-neighbour outside it (1-px inner contour)."""
    m = np.pad(mask, 1, constant_values=False)
    inner = m[1:-1, 1:-1] & m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]
    return mask & ~inner


def draw_box(img: np.ndarray, y0: int, x0: int, y1: int, x1: int, color, pad: int = 2) -> None:
    h, w = img.shape[:2]
    y0, x0 = max(0, y0 - pad), max(0, x0 - pad)
    y1, x1 = min(h - 1, y1 + pad), min(w - 1, x1 + pad)
    img[y0, x0:x1 + 1] = color
    img[y1, x0:x1 + 1] = color
    img[y0:y1 + 1, x0] = color
    img[y0:y1 + 1, x1] = color


def main() -> None:
    card = cc.load_card()
    model_um, thr0, amin0, amax0 = cc.card_defaults(card)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--model", default=cc.DEFAULT_MODEL)
    ap.add_argument("--um-per-px", type=float, default=model_um, help="pixel size of the frames")
    ap.add_argument("--threshold", type=float, default=thr0)
    ap.add_argument("--min-area-um2", type=float, default=amin0)
    ap.add_argument("--max-area-um2", type=float, default=amax0)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()

    os.makedirs(a.out, exist_ok=True)
    sess = cc.make_session(a.model, a.threads)
    names = cc.list_pngs(a.frames)
    if not names:
        sys.exit(f"no PNG frames in {a.frames}")
    print(f"model={os.path.basename(a.model)} threshold={a.threshold} area=[{a.min_area_um2}, {a.max_area_um2}] um^2 "
          f"um/px={a.um_per_px}")
    print(f"{'file':<24} {'count':>5} {'area_frac':>9} {'rejected_large':>14} {'ms':>7}")
    counts, fracs = [], []
    for name in names:
        path = os.path.join(a.frames, name)
        green = cc.load_green(path)
        t0 = time.perf_counter()
        prob = cc.predict(sess, green, a.um_per_px, model_um)
        ms = (time.perf_counter() - t0) * 1e3
        mask = prob >= a.threshold
        count, frac, comps, keep = cc.count_and_fraction(mask, a.um_per_px, a.min_area_um2, a.max_area_um2)
        area_um2 = comps.area * a.um_per_px ** 2
        large = np.nonzero(area_um2 > a.max_area_um2)[0]
        large = large[large > 0]

        rgb = np.asarray(Image.open(path).convert("RGB")).copy()
        rgb[outline(mask)] = YELLOW
        for i in np.nonzero(keep)[0]:
            draw_box(rgb, *comps.bbox[i].tolist(), CYAN)
        for i in large:
            draw_box(rgb, *comps.bbox[i].tolist(), RED)
        Image.fromarray(rgb).save(os.path.join(a.out, name))
        counts.append(count)
        fracs.append(frac)
        print(f"{name:<24} {count:>5} {frac:>9.4f} {len(large):>14} {ms:>7.1f}")
    print(f"{'mean':<24} {np.mean(counts):>5.1f} {np.mean(fracs):>9.4f}")


if __name__ == "__main__":
    main()
