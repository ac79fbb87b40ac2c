"""How training brings a frame to its working pixel size: the rule of `operators/src/preprocess.rs`.

A frame is segmented at its own pixel size clamped into UM_PER_PX_RANGE, coarsened further if it would
exceed MAX_MEGAPIXELS, and resized with Pillow's BILINEAR filter (the Rust side implements the same
triangle filter). Training uses 1.5-4.5 um/px, and the shipped card runs the model over the same range
(`um_per_px_range`), chosen from the measured speed/accuracy trade-off in models/README.md.
"""

import math

import numpy as np
from PIL import Image

UM_PER_PX_RANGE = (1.5, 4.5)
NOMINAL_UM_PER_PX = 3.0
MAX_MEGAPIXELS = 0.6
PAD_MULTIPLE = 16


def working_um_per_px(w, h, um_per_px):
    working = min(max(um_per_px, UM_PER_PX_RANGE[0]), UM_PER_PX_RANGE[1])
    megapixels = w * h * (um_per_px / working) ** 2 / 1e6
    if megapixels > MAX_MEGAPIXELS:
        working *= math.sqrt(megapixels / MAX_MEGAPIXELS)
        working = min(working, max(UM_PER_PX_RANGE[1], um_per_px))
    return working


def working_size(w, h, um_per_px):
    factor = um_per_px / working_um_per_px(w, h, um_per_px)
    if abs(factor - 1.0) < 0.05:
        return w, h
    return max(1, round(w * factor)), max(1, round(h * factor))


def channels(rgb):
    """RGB uint8 (H, W, 3) -> green and redness planes as float32 0..255 (as `Channel::Green/Redness`)."""
    rgb = rgb.astype(np.float32)
    r, g = rgb[..., 0], rgb[..., 1]
    red = np.clip(2.0 * (r - g) / (r + g + 1.0), 0.0, 1.0) * 255.0
    return g, red


def resize(plane, w, h):
    if plane.shape == (h, w):
        return plane.astype(np.float32)
    return np.asarray(Image.fromarray(plane.astype(np.float32), mode="F").resize((w, h), Image.BILINEAR))
