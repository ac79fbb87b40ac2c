#!/usr/bin/env python3
"""Build capillary-classical-v1.onnx: a hand-designed (non-learned) capillary detector as an ONNX graph.

Run:  .venv/bin/python models/build_classical.py [--out PATH]

Contract (the Rust pipeline depends on it):
  input  `image` float32 [N, 1, H, W]  (symbolic N, H, W) = 8-bit green channel (RGB) or luma (gray) x 1/255
  output `prob`  float32 [N, 1, H, W]  per-pixel probability that the pixel belongs to a capillary lumen
  opset 17, IR version 8; H, W >= 64; any batch size; no fixed size multiple.

There are no learned or random weights.  Every constant below is a hand-chosen filter size, threshold or
gain for frames at 2.2 um/px (the pipeline resizes frames to that pixel size first).  Rebuilding gives a
byte-identical file (fixed producer fields, no timestamps, fixed node order, deterministic serialisation).

Pipeline (green channel: haemoglobin absorbs green, so capillary lumens are darker than the skin around them):
  0. w     = 2x2 box average of the image: the "working grid" (4.4 um/px).  Lumens are >= ~3 full-res px wide,
             so nothing is lost, and every later full-resolution op becomes 4x cheaper.
  1. s     = one 3x3 box pass on the working grid (sensor grain / JPEG blocks); effective sigma ~1.7 full px.
  2. bg    = morphological closing (max filter, then min filter) of a further 2x2-averaged copy (8.8 um/px,
             "low-res"), box-smoothed and resized (linear) back to the working grid.  A closing fills in dark
             structures narrower than its window - capillary lumens - and follows anything wider: the diffuse
             pink halo of the dermal papilla, vignetting, hair shafts (~40 px wide), shadows.
  3. d     = (bg - s) / (bg + eps): darkness relative to the local background (illumination-invariant).
  4. edge  = max(THRESHOLD, REL_FRACTION x local peak of d): edges at 65 % of the local peak for high-contrast
             lumens (keeps the soft halo around a lumen out of the mask).
     hyst  = the local peak of d (within ANCHOR_RADIUS_WK) must reach ANCHOR_THRESHOLD (one-step hysteresis).
  5. keep  = veto at low-res: (a) very dark objects (hair shafts, dirt): darkest pixel of a block far below a
             hair-wide closing; (b) wide dark objects (hair roots, shadows): the capillary-scale background
             itself far below a much wider closing; both grown by VETO_DILATE_LR; (c) a one-block frame border.
  6. prob  = closing_PROB_CLOSE_WK[Sigmoid(GAIN (d - edge)) x Sigmoid(GAIN (peak - ANCHOR_THRESHOLD))] x keep,
             resized (linear) from the working grid to H x W.  (The closing re-joins pieces of one loop.)
Every spatial filter is an AveragePool or a separable MaxPool (ONNX MaxPool pads with -inf and AveragePool
uses count_include_pad=0, so borders need no special care); no Conv (a single-channel Conv costs ~30 ms per
1080p frame in onnxruntime, the pools ~1-3 ms).
"""
from __future__ import annotations

import argparse
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# ----------------------------------------------------------------------------------------------------------
# Parameters.  Sizes in px are at 2.2 um/px; "wk" = working-grid px (2 full-res px), "lr" = low-res px
# (4 full-res px = 8.8 um).  Tuning notes and measured numbers: models/README.md.
# ----------------------------------------------------------------------------------------------------------
OPSET = 17
IR_VERSION = 8

# 0./1. Working grid and pre-smoothing.  Skin capillary lumens are >= ~3 px (7 um) wide and their loops
#    10-80 px long; a 2x2 average plus one 3x3 box pass (sigma ~1.7 full-res px) keeps 3-px lumens visible
#    while suppressing single-pixel grain.  (Full-resolution processing gave masks with IoU ~0.93 to this
#    one at 2.5x the cost.)
WORK_DOWNSAMPLE = 2
SMOOTH_PASSES = 1

# 2. Background.  Low-res grid = BG_DOWNSAMPLE x the working grid (4x4 full-res px: also a strong denoiser,
#    and the closing becomes 16x cheaper than at full res).  The closing window must exceed the width of a
#    capillary lumen or loop (up to ~30 px = 66 um at full res) but stay below the papilla halo (~100 px).
#    7 lr (28 px) split large loops and missed clusters; 11 lr (44 px) started to absorb halos (area fraction
#    +23-52 %); 9 lr was the best compromise on the real frames.
BG_DOWNSAMPLE = 2
CLOSE_WINDOW_LR = 9          # 9 lr px = 36 full-res px = 79 um
BG_SMOOTH_LR = 3             # 3x3 box after the closing rounds off its flat plateaus before the linear resize
EPS = 1.0 / 255.0            # keeps d finite on black frames

# 5. Vetoes (computed on the low-res grid, soft edges of width VETO_SOFTNESS in ratio units).
#  a. Very dark objects.  Real capillary lumens reached at most ~30 % below a hair-wide closing of the
#     surroundings (ratio >= 0.68-0.70 on the real frames); hair shafts, dirt specks and bubble rims reach
#     35-60 % (ratio 0.40-0.66; the darkest hair-shaft pieces/fragments that fire once unvetoed sit at
#     0.55-0.62).  The ratio uses the darkest smoothed pixel of each 4x4 block, so thin dark objects are not
#     averaged away.  v1.0 used 0.68, which left no margin for real lumens and vetoed ~1/4 of the synthetic
#     skin vessels (`capflow synth`, block-minimum ratio 0.60-0.75); 0.64 keeps most of them and still
#     vetoes everything it vetoed on the 8 real frames (0.62 already let a hair-shaft edge and a blurred
#     hair fragment in frame 3 through).
VETO_RATIO = 0.64
VETO_CLOSE_LR = 15           # 60 full-res px = 132 um: wider than a hair shaft (~35-40 px)
#  b. Wide dark objects: if the capillary-scale background (closing of CLOSE_WINDOW_LR) is itself more than
#     20 % below a 124-px closing, the dark thing is wider than a capillary (blurred hair root, shadow, fold).
#     Real capillary components stayed >= 0.84 on the 8 frames; the blurred hair root in frame 3 was 0.76-0.83.
WIDE_RATIO = 0.80
WIDE_CLOSE_LR = 31           # 124 full-res px = 273 um
VETO_SOFTNESS = 0.02
VETO_DILATE_LR = 5           # grow vetoed areas by +-2 lr px (~8-10 px) to take the blurred rims with them
#  c. Border.  The HDMIA sensor/codec leaves 2-4 columns ~3 grey levels darker at the left edge, which fired;
#     the outermost low-res block (4 px, ramping to full weight by ~6-8 px) is never reported.
BORDER_LR = 1

# 4./6. Decision.  Capillaries are ~6-30 % darker than their local background, skin texture and noise
#    mostly < 4 %.  A pixel is a lumen pixel (prob 0.5) where d crosses max(THRESHOLD, REL_FRACTION x peak),
#    provided the peak of d within ANCHOR_RADIUS_WK reaches ANCHOR_THRESHOLD.  A single threshold of 0.06
#    broke faint loops into fragments and kept texture specks; 0.05/0.07 with hysteresis cut the 50-150 um2
#    speck components from 7-21 to 1-7 per frame.
#    REL_FRACTION: the edge sits at this fraction of the local peak darkness, so high-contrast lumens are
#    not outlined wider than they are (the soft darker halo around a lumen stays out).  v1.0 used 0.5 (half
#    maximum), which took in the halo: on synthetic skin frames area +30-45 % over the true lumen, Dice 0.56.
#    0.65 gives Dice 0.77 there and shrinks the real outlines by ~25 % (area fraction 1.33 % -> 1.00 %);
#    0.7 (synthetic Dice 0.81) took the real area fraction down to 0.83 % and the real count up to 50.
THRESHOLD = 0.050
ANCHOR_THRESHOLD = 0.070
ANCHOR_RADIUS_WK = 3         # 3 wk px = 6 full-res px = 13 um
REL_FRACTION = 0.65
GAIN = 120.0                 # logistic slope: prob 0.12..0.88 over d = edge +- 0.017
# 6b. Closing (max then min filter) of the probability map on the working grid, before the veto.  The tighter
#    edges above break faint hairpin limbs/bends into pieces (real count 49.6 -> 53.9 without it); a 5-wk
#    (10 full-res px) closing re-joins pieces less than ~8 px apart (real count back to ~49) and fills the
#    unresolvable 1-3 px gap between the limbs of tight hairpins.  It does not widen isolated outlines.
PROB_CLOSE_WK = 5            # 0 = off


class G:
    """Tiny graph builder with deterministic, readable node and tensor names."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.n = 0

    def const(self, name: str, value) -> str:
        arr = np.asarray(value)
        if arr.dtype == np.float64:
            arr = arr.astype(np.float32)
        self.inits.append(numpy_helper.from_array(arr, name=name))
        return name

    def op(self, op_type: str, inputs: list[str], out: str | None = None, **attrs) -> str:
        self.n += 1
        out = out or f"{op_type.lower()}_{self.n}"
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=f"n{self.n:02d}_{op_type}", **attrs))
        return out

    # separable max filter of odd size k (pads are -inf in ONNX MaxPool, so borders are safe)
    def maxfilt(self, x: str, k: int) -> str:
        r = k // 2
        y = self.op("MaxPool", [x], kernel_shape=[k, 1], pads=[r, 0, r, 0], strides=[1, 1])
        return self.op("MaxPool", [y], kernel_shape=[1, k], pads=[0, r, 0, r], strides=[1, 1])

    def minfilt(self, x: str, k: int) -> str:
        return self.op("Neg", [self.maxfilt(self.op("Neg", [x]), k)])

    def closing(self, x: str, k: int) -> str:
        return self.minfilt(self.maxfilt(x, k), k)

    def boxfilt(self, x: str, k: int) -> str:
        r = k // 2
        return self.op("AveragePool", [x], kernel_shape=[k, k], pads=[r, r, r, r], strides=[1, 1],
                       count_include_pad=0)


def build_model(p: dict | None = None) -> onnx.ModelProto:
    """Build the graph; `p` overrides module-level parameters by name (used for tuning experiments)."""
    P = {k: v for k, v in globals().items() if k.isupper() and k not in ("OPSET", "IR_VERSION")}
    P.update(p or {})
    g = G()
    x = "image"
    g.const("eps", np.array(P["EPS"], dtype=np.float32))
    full_shape = g.op("Shape", [x], out="image_shape")

    # --- 0. working grid: 2x2 box average (also the first smoothing step) ---------------------------------
    wd = int(P["WORK_DOWNSAMPLE"])
    w = x
    if wd > 1:
        w = g.op("AveragePool", [x], kernel_shape=[wd, wd], strides=[wd, wd], ceil_mode=1,
                 count_include_pad=0, out="work")
    work_shape = g.op("Shape", [w], out="work_shape") if wd > 1 else full_shape

    # --- 1. pre-smoothing on the working grid -------------------------------------------------------------
    s = w
    for _ in range(int(P["SMOOTH_PASSES"])):
        s = g.boxfilt(s, 3)
    s = g.op("Identity", [s], out="smooth")

    # --- 2. background: closing at low resolution ---------------------------------------------------------
    f = int(P["BG_DOWNSAMPLE"])
    lr = g.op("AveragePool", [w], kernel_shape=[f, f], strides=[f, f], ceil_mode=1, count_include_pad=0,
              out="lowres")
    bg_lr = g.boxfilt(g.closing(lr, int(P["CLOSE_WINDOW_LR"])), int(P["BG_SMOOTH_LR"]))
    bg_lr = g.op("Identity", [bg_lr], out="background_lr")

    # --- 5. veto map at low resolution (1 = keep, 0 = suppress) ---------------------------------------
    keep = None
    if P["VETO_RATIO"] > 0 or P["WIDE_RATIO"] > 0:
        g.const("veto_gain", np.array(1.0 / P["VETO_SOFTNESS"], dtype=np.float32))
    if P["VETO_RATIO"] > 0:
        # 5a. very dark objects (hair shafts, dirt, bubbles' rims): the darkest smoothed pixel of each low-res
        #     block is far below a closing wider than a hair shaft.
        lr_min = g.op("Neg", [g.op("MaxPool", [g.op("Neg", [s])], kernel_shape=[f, f], strides=[f, f],
                                   ceil_mode=1)], out="lowres_min")
        big_lr = g.closing(lr, int(P["VETO_CLOSE_LR"]))
        ratio = g.op("Div", [lr_min, g.op("Add", [big_lr, "eps"])], out="veto_ratio_map")
        g.const("veto_ratio", np.array(P["VETO_RATIO"], dtype=np.float32))
        keep = g.op("Sigmoid", [g.op("Mul", [g.op("Sub", [ratio, "veto_ratio"]), "veto_gain"])])
    if P["WIDE_RATIO"] > 0:
        # 5b. wide dark objects: where the capillary-scale background itself sits far below a much wider
        #     closing, the dark thing is wider than CLOSE_WINDOW (hair root, shadow, fold), not a lumen.
        wide_lr = g.closing(lr, int(P["WIDE_CLOSE_LR"]))
        wide = g.op("Div", [bg_lr, g.op("Add", [wide_lr, "eps"])], out="wide_ratio_map")
        g.const("wide_ratio", np.array(P["WIDE_RATIO"], dtype=np.float32))
        keep_w = g.op("Sigmoid", [g.op("Mul", [g.op("Sub", [wide, "wide_ratio"]), "veto_gain"])])
        keep = keep_w if keep is None else g.op("Min", [keep, keep_w])
    if keep is None:
        keep = g.op("Add", [g.op("Mul", [lr, g.const("zero", np.array(0.0, np.float32))]),
                            g.const("one", np.array(1.0, np.float32))])
    elif P["VETO_DILATE_LR"] > 1:
        keep = g.minfilt(keep, int(P["VETO_DILATE_LR"]))       # grow the vetoed (low-keep) area
    # 5c. border: the outermost BORDER_LR low-res blocks are not analysed.  Real sensors/codecs leave 2-4
    #     darker columns/rows at the frame edge (~3 grey levels on the HDMIA frames) that would otherwise fire.
    if P["BORDER_LR"] > 0:
        b = int(P["BORDER_LR"])
        g.const("border_starts", np.array([b, b], dtype=np.int64))
        g.const("border_ends", np.array([-b, -b], dtype=np.int64))
        g.const("axes_hw", np.array([2, 3], dtype=np.int64))
        g.const("border_pads", np.array([0, 0, b, b, 0, 0, b, b], dtype=np.int64))
        keep = g.op("Pad", [g.op("Slice", [keep, "border_starts", "border_ends", "axes_hw"]), "border_pads"],
                    mode="constant")
    keep = g.op("Identity", [keep], out="keep_lr")

    # background and veto go up to the working grid in one 2-channel linear Resize
    g.const("two", np.array([2], dtype=np.int64))
    g.const("i0", np.array([0], dtype=np.int64))
    g.const("i1", np.array([1], dtype=np.int64))
    g.const("i2", np.array([2], dtype=np.int64))
    g.const("i4", np.array([4], dtype=np.int64))
    n_dim = g.op("Slice", [work_shape, "i0", "i1"])
    hw_dims = g.op("Slice", [work_shape, "i2", "i4"])
    size2 = g.op("Concat", [n_dim, "two", hw_dims], axis=0, out="work_shape_2ch")
    both = g.op("Resize", [g.op("Concat", [bg_lr, keep], axis=1), "", "", size2], mode="linear",
                coordinate_transformation_mode="half_pixel")
    g.nodes.append(helper.make_node("Split", [both], ["background", "keep"], axis=1, name="n_split"))
    bg, keep_w = "background", "keep"

    # --- 3. relative darkness -----------------------------------------------------------------------------
    d = g.op("Div", [g.op("Sub", [bg, s]), g.op("Add", [bg, "eps"])], out="darkness")

    # --- 6. decision with one-step hysteresis --------------------------------------------------------
    # p_low: darker than THRESHOLD; anchor: within ANCHOR_RADIUS_WK of a pixel darker than ANCHOR_THRESHOLD.
    # Only dark pixels near a clearly dark pixel survive: isolated texture specks that just touch THRESHOLD
    # die, while the fainter rim of a real loop (which breaks it into fragments at a single threshold) stays.
    g.const("thr", np.array(P["THRESHOLD"], dtype=np.float32))
    g.const("gain", np.array(P["GAIN"], dtype=np.float32))
    dmax = g.maxfilt(d, 2 * int(P["ANCHOR_RADIUS_WK"]) + 1)
    thr = "thr"
    if P["REL_FRACTION"] > 0:
        # edge at a fixed fraction of the local peak darkness (half-maximum style), so that a blurred
        # high-contrast lumen is not outlined wider than it is; faint ones fall back to THRESHOLD.
        g.const("rel_frac", np.array(P["REL_FRACTION"], dtype=np.float32))
        thr = g.op("Max", [g.op("Mul", [dmax, "rel_frac"]), "thr"], out="local_threshold")
    p_dark = g.op("Sigmoid", [g.op("Mul", [g.op("Sub", [d, thr]), "gain"])], out="p_low")
    if P["ANCHOR_THRESHOLD"] > P["THRESHOLD"]:
        g.const("anchor_thr", np.array(P["ANCHOR_THRESHOLD"], dtype=np.float32))
        anchor = g.op("Sigmoid", [g.op("Mul", [g.op("Sub", [dmax, "anchor_thr"]), "gain"])], out="anchor")
        p_dark = g.op("Mul", [p_dark, anchor], out="p_dark")
    if P["PROB_CLOSE_WK"] > 1:
        p_dark = g.op("Identity", [g.closing(p_dark, int(P["PROB_CLOSE_WK"]))], out="p_closed")
    if wd > 1:
        p_work = g.op("Mul", [p_dark, keep_w], out="prob_work")
        g.op("Resize", [p_work, "", "", full_shape], out="prob", mode="linear",
             coordinate_transformation_mode="half_pixel")
    else:
        g.op("Mul", [p_dark, keep_w], out="prob")

    inp = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, "H", "W"])
    out = helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["N", 1, "H", "W"])
    graph = helper.make_graph(g.nodes, "capillary_classical_v1", [inp], [out], initializer=g.inits,
                              doc_string="Hand-designed capillary detector (no learned weights); "
                                         "see models/build_classical.py")
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="capflow/models/build_classical.py", producer_version="1.1.0")
    model.ir_version = IR_VERSION
    model.model_version = 1
    model.doc_string = "capillary-classical-v1: classical capillary detector (green channel, 2.2 um/px)"
    meta = {"name": "capillary-classical-v1", "version": "1.1.0", "um_per_px": "2.2"}
    for k in sorted(meta):
        e = model.metadata_props.add()
        e.key, e.value = k, meta[k]
    onnx.checker.check_model(model, full_check=True)
    return model


def main() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(here, "capillary-classical-v1.onnx"))
    a = ap.parse_args()
    model = build_model()
    data = model.SerializeToString(deterministic=True)
    with open(a.out, "wb") as fh:
        fh.write(data)
    print(f"wrote {a.out} ({len(data)} bytes, {len(model.graph.node)} nodes, opset {OPSET}, IR {IR_VERSION})")


if __name__ == "__main__":
    main()
