"""Shared helpers for eval_classical.py and overlay.py (numpy + Pillow + onnxruntime only; no scipy)."""
from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_MODEL = os.path.join(HERE, "capillary-classical-v1.onnx")
DEFAULT_CARD = os.path.join(HERE, "capillary-classical-v1.toml")


def load_card(path: str = DEFAULT_CARD) -> dict:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        return {}


def card_defaults(card: dict) -> tuple[float, float, float, float]:
    """(model um/px, threshold, min_area_um2, max_area_um2) from the model card, with fallbacks."""
    um = float(card.get("input", {}).get("um_per_px", 2.2))
    thr = float(card.get("output", {}).get("threshold", 0.5))
    pp = card.get("postprocess", {})
    return um, thr, float(pp.get("min_area_um2", 100.0)), float(pp.get("max_area_um2", 20000.0))


def list_pngs(d: str) -> list[str]:
    return sorted(f for f in os.listdir(d) if f.lower().endswith(".png"))


def load_green(path: str) -> np.ndarray:
    """8-bit green channel of an RGB(A) frame, or the luma of a grayscale one, as uint8 [H, W]."""
    im = Image.open(path)
    if im.mode in ("L", "I", "I;16", "F"):
        return np.asarray(im.convert("L"))
    if im.mode == "LA":
        return np.asarray(im.convert("L"))
    return np.asarray(im.convert("RGB"))[..., 1]


def make_session(model_path: str = DEFAULT_MODEL, threads: int = 2):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(model_path, so, providers=["CPUExecutionProvider"])


def predict(sess, green: np.ndarray, frame_um_per_px: float = 2.2, model_um_per_px: float = 2.2) -> np.ndarray:
    """Run the model on a uint8 green image; returns prob [H, W] at the frame's own resolution.
    If the frame's pixel size differs from the model's, the frame is resized to the model's pixel size
    first (as the pipeline does) and the probability map resized back."""
    h, w = green.shape
    img = green
    if abs(frame_um_per_px - model_um_per_px) > 1e-6:
        f = frame_um_per_px / model_um_per_px
        nh, nw = max(1, round(h * f)), max(1, round(w * f))
        img = np.asarray(Image.fromarray(green).resize((nw, nh), Image.BILINEAR))
    x = (img.astype(np.float32) * np.float32(1.0 / 255.0))[None, None]
    prob = sess.run(["prob"], {"image": x})[0][0, 0]
    if prob.shape != (h, w):
        prob = np.asarray(Image.fromarray(prob.astype(np.float32), mode="F").resize((w, h), Image.BILINEAR))
    return prob


# ----------------------------------------------------------------------------------------------------------
# 8-connected component labelling: vectorised union-find (hooking + pointer jumping) over foreground pixels.
# ----------------------------------------------------------------------------------------------------------
@dataclass
class Components:
    labels: np.ndarray      # int32 [H, W], 0 = background, 1..n = components
    area: np.ndarray        # int64 [n+1] pixel count per label (area[0] = 0)
    bbox: np.ndarray        # int64 [n+1, 4] (y0, x0, y1, x1) inclusive

    @property
    def n(self) -> int:
        return len(self.area) - 1


def label8(mask: np.ndarray) -> Components:
    mask = np.asarray(mask, dtype=bool)
    h, w = mask.shape
    ys, xs = np.nonzero(mask)
    n = ys.size
    labels = np.zeros((h, w), dtype=np.int32)
    if n == 0:
        return Components(labels, np.zeros(1, np.int64), np.zeros((1, 4), np.int64))
    idx = np.full((h, w), -1, dtype=np.int64)
    idx[ys, xs] = np.arange(n)
    a_list, b_list = [], []
    # forward half of the 8-neighbourhood: right, down-left, down, down-right
    for dy, dx in ((0, 1), (1, -1), (1, 0), (1, 1)):
        y0, y1 = 0, h - dy
        x0, x1 = max(0, -dx), w - max(0, dx)
        src = idx[y0:y1, x0:x1]
        dst = idx[y0 + dy:y1 + dy, x0 + dx:x1 + dx]
        m = (src >= 0) & (dst >= 0)
        a_list.append(src[m])
        b_list.append(dst[m])
    a = np.concatenate(a_list)
    b = np.concatenate(b_list)
    parent = np.arange(n, dtype=np.int64)

    def compress(p: np.ndarray) -> np.ndarray:
        while True:
            pp = p[p]
            if np.array_equal(pp, p):
                return p
            p = pp

    while a.size:
        ra, rb = parent[a], parent[b]
        diff = ra != rb
        if not diff.any():
            break
        a, b, ra, rb = a[diff], b[diff], ra[diff], rb[diff]
        lo, hi = np.minimum(ra, rb), np.maximum(ra, rb)
        np.minimum.at(parent, hi, lo)
        parent = compress(parent)
    roots = compress(parent)
    uniq, lab = np.unique(roots, return_inverse=True)
    lab = lab.astype(np.int32) + 1
    labels[ys, xs] = lab
    k = uniq.size
    area = np.bincount(lab, minlength=k + 1).astype(np.int64)
    bbox = np.zeros((k + 1, 4), dtype=np.int64)
    bbox[:, 0] = h
    bbox[:, 1] = w
    bbox[:, 2] = -1
    bbox[:, 3] = -1
    np.minimum.at(bbox[:, 0], lab, ys)
    np.minimum.at(bbox[:, 1], lab, xs)
    np.maximum.at(bbox[:, 2], lab, ys)
    np.maximum.at(bbox[:, 3], lab, xs)
    bbox[0] = 0
    return Components(labels, area, bbox)


def filter_components(c: Components, um_per_px: float, min_um2: float, max_um2: float) -> np.ndarray:
    """Boolean [n+1] keep flags (index 0 = background is never kept) for components within the area range."""
    px_area = um_per_px * um_per_px
    area_um2 = c.area * px_area
    keep = (area_um2 >= min_um2) & (area_um2 <= max_um2)
    keep[0] = False
    return keep


def count_and_fraction(mask: np.ndarray, um_per_px: float, min_um2: float, max_um2: float):
    """(count, area fraction of the counted components, components, keep flags)."""
    c = label8(mask)
    keep = filter_components(c, um_per_px, min_um2, max_um2)
    count = int(keep.sum())
    frac = float(c.area[keep].sum()) / float(mask.size)
    return count, frac, c, keep
