#!/usr/bin/env python3
"""Baseline for capflow's benchmarks: the frame-by-frame script a researcher would write instead.

What it is
    A plain Python loop that decodes a video with OpenCV (``cv2.VideoCapture``), preprocesses each frame with
    numpy/OpenCV exactly as the model card asks, runs the same ONNX model with the onnxruntime Python package one
    frame at a time (batch 1), thresholds the probability map and counts capillaries with
    ``cv2.connectedComponentsWithStats`` -- the segmentation + counting part of ``capflow run``, nothing more
    (no stabilisation, vessel maps, flow, quality or Parquet output).

Why it exists
    The README's "Benchmarks" section compares capflow against the obvious alternative. This script *is* that
    alternative, so the comparison is against something anyone can rerun and read, not against a straw man. It
    does the same work per frame as the pipeline's segmentation (same model, same channels, same working pixel
    size, same padding, same counting rule) so that its ``mean_count`` / ``mean_area_fraction`` agree with
    ``capflow run``'s ``frames`` table on the same clip (a few percent: see "Differences" below), which shows the
    two measure the same thing.

How to run
    .venv/bin/python -m pip install -r tools/requirements-bench.txt      # opencv-python-headless (numpy, onnxruntime
                                                                # come from tools/requirements.txt)
    .venv/bin/python tools/bench_baseline.py CLIP.mp4 [--um-per-px 2.2] [--threads 1] [--frames N]
        [--card models/capillary-seg-v1.toml] [--per-frame counts.csv]

    e.g. on the benchmark clips:
        capflow synth --preset skin --frames 100 --seed 2026 --out /tmp/bl --name bench-1080p
        .venv/bin/python tools/bench_baseline.py /tmp/bl/bench-1080p.mp4 --threads 1
        capflow synth --preset sublingual --frames 150 --seed 2026 --out /tmp/bl --name sublingual-480p
        .venv/bin/python tools/bench_baseline.py /tmp/bl/sublingual-480p.mp4 --um-per-px 1.5 --threads 2

    Prints the working size on stderr and one JSON object on stdout:
    {"frames", "seconds", "fps", "decode_s", "preprocess_s", "inference_s", "postprocess_s", "working_size",
     "mean_count", "mean_area_fraction", "threads", "opencv", "onnxruntime", ...}

What is timed
    Before the timed loop the session runs ``--warmup`` inferences (default 2) on a zero tensor of the working
    size (ONNX Runtime allocates and plans on its first runs); nothing else is warmed up and no frame is skipped.
    The timed loop covers every frame from the first decode to the last count: ``seconds`` is its wall time
    (opening the clip and creating the session are outside it), ``fps = frames / seconds``, and the four stage
    times are the sums of per-frame ``time.perf_counter()`` intervals, so they add up to ``seconds`` minus loop
    overhead.

Preprocessing (mirrors operators/src/preprocess.rs)
    * Channels, from the 8-bit frame at full resolution (OpenCV decodes to **BGR**, so R = [..., 2], G = [..., 1]):
      ``green`` = G; ``luma`` = (77 R + 150 G + 29 B + 128) >> 8 (BT.601, integer); ``redness`` =
      clamp(2 (R - G) / (R + G + 1), 0, 1) * 255 -- every plane is on the 0..255 scale, so the card's one
      ``scale`` (1/255) applies to all of them, then ``(v * scale - mean) / std``.
    * Working pixel size: the frame's own µm/px clamped into ``um_per_px_range`` (``um_per_px`` when the card has
      no range); if the frame would then exceed ``max_megapixels`` it is coarsened to that many pixels, but never
      beyond the range's coarse end. Size = round(side * um_per_px / working), kept unchanged when within 5 %.
    * Each channel plane is resized to the working size with ``cv2.resize`` (``INTER_AREA`` when shrinking, the
      usual choice; ``INTER_LINEAR`` when enlarging), then padded at the bottom/right to ``max(size, min_size)``
      rounded up to ``pad_multiple`` by repeating the edge, stacked NCHW float32.

Postprocessing (mirrors operators/src/metrics.rs)
    Crop the padding, ``mask = prob > threshold``, 8-connected components (linked through
    ``prob > postprocess.link_threshold`` when the card sets one, each measured by its pixels above the threshold),
    keep those whose area
    ``area_px * um_per_px**2`` (µm per pixel of the *working* size: input µm/px * width / working width) lies in
    [min_area_um2, max_area_um2]; count = number kept, area fraction = their pixels / working pixels.

Differences from capflow (why counts agree closely, not exactly)
    * Decoding: capflow decodes with GStreamer (videoconvert), OpenCV with its bundled FFmpeg (swscale). Their
      YUV -> RGB conversions differ: on the synthetic 1080p skin clip OpenCV's R and G are ~1.9 grey levels
      brighter than GStreamer's (at most 3; B the same). This is most of the difference.
    * Resize filter: capflow uses Pillow's BILINEAR triangle filter (what training used); this script uses
      OpenCV's INTER_AREA box filter, as a researcher would (mean difference ~0.05 grey levels after the 1.86x
      shrink of a 1080p frame).
    Fed GStreamer's RGB frames and resized with Pillow instead, this script's preprocessing and counting give
    capflow's per-frame counts and area fractions exactly (checked on a 100-frame 1080p skin clip); as written,
    mean count and area fraction are within ~0.5 % (skin, learned model), 1.2 % / 0.1 % (sublingual) and
    0.1 % / 2.3 % (skin, classical model) of ``capflow run``'s.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import tomllib
from pathlib import Path

try:
    import numpy as np
except ImportError:  # pragma: no cover - environment problem, not a code path
    sys.exit(
        "bench_baseline.py: numpy is not installed in this Python.\n"
        "Fix: .venv/bin/python -m pip install -r tools/requirements.txt -r tools/requirements-bench.txt"
    )

try:
    import cv2
except ImportError:
    sys.exit(
        "bench_baseline.py: OpenCV (cv2) is not installed in this Python ("
        + sys.executable
        + ").\nFix: .venv/bin/python -m pip install -r tools/requirements-bench.txt   (opencv-python-headless)"
    )

try:
    import onnxruntime as ort
except ImportError:
    sys.exit(
        "bench_baseline.py: onnxruntime is not installed in this Python ("
        + sys.executable
        + ").\nFix: .venv/bin/python -m pip install -r tools/requirements.txt   (onnxruntime)"
    )

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CARD = ROOT / "models" / "capillary-seg-v1.toml"


# --------------------------------------------------------------------------------------------- model card


def load_card(path: Path) -> dict:
    """Reads a model card and resolves its ONNX path relative to the card."""
    try:
        with open(path, "rb") as f:
            card = tomllib.load(f)
    except FileNotFoundError:
        sys.exit(f"bench_baseline.py: model card {path} not found.\nFix: pass --card models/<name>.toml")
    except tomllib.TOMLDecodeError as e:
        sys.exit(f"bench_baseline.py: model card {path} is not valid TOML: {e}")
    card["onnx_path"] = (path.parent / card["onnx"]).resolve()
    if not card["onnx_path"].is_file():
        sys.exit(
            f"bench_baseline.py: ONNX file {card['onnx_path']} named by {path} (onnx = {card['onnx']!r}) "
            "not found.\nFix: check out the model files (models/*.onnx) or point --card at a complete card"
        )
    if card["input"].get("layout", "NCHW") != "NCHW":
        sys.exit(f"bench_baseline.py: {path}: only NCHW input layout is supported")
    unknown = set(card["input"]["channels"]) - {"green", "luma", "redness"}
    if unknown:
        sys.exit(f"bench_baseline.py: {path}: unknown input channel(s) {sorted(unknown)}")
    return card


def working_um_per_px(w: int, h: int, um_per_px: float, spec: dict) -> float:
    """Pixel size the frame is segmented at (preprocess.rs `working_um_per_px`)."""
    rng = spec.get("um_per_px_range")
    working = min(max(um_per_px, rng[0]), rng[1]) if rng else spec["um_per_px"]
    max_mp = spec.get("max_megapixels")
    if max_mp is not None:
        megapixels = w * h * (um_per_px / working) ** 2 / 1e6
        if megapixels > max_mp:
            working *= math.sqrt(megapixels / max_mp)
            if rng:
                working = min(working, max(rng[1], um_per_px))
    return working


def working_size(w: int, h: int, um_per_px: float, spec: dict) -> tuple[int, int]:
    """Frame size after resizing to the working pixel size; unchanged within 5 % (preprocess.rs `model_size`)."""
    factor = um_per_px / working_um_per_px(w, h, um_per_px, spec)
    if abs(factor - 1.0) < 0.05:
        return w, h
    # Rust's f64::round rounds halves away from zero; Python's round() would round them to even.
    return max(1, math.floor(w * factor + 0.5)), max(1, math.floor(h * factor + 0.5))


# ------------------------------------------------------------------------------------------------ stages


def channel_planes(bgr: np.ndarray, channels: list[str]) -> list[np.ndarray]:
    """The card's channel planes of a BGR frame, float32 on the 0..255 scale, at full resolution."""
    g = bgr[..., 1].astype(np.float32)
    planes = []
    for name in channels:
        if name == "green":
            planes.append(g)
        elif name == "luma":
            b8, g8, r8 = (bgr[..., i].astype(np.uint32) for i in range(3))
            planes.append(((77 * r8 + 150 * g8 + 29 * b8 + 128) >> 8).astype(np.float32))
        else:  # redness
            r = bgr[..., 2].astype(np.float32)
            planes.append(np.clip(2.0 * (r - g) / (r + g + 1.0), 0.0, 1.0) * 255.0)
    return planes


def preprocess(bgr: np.ndarray, spec: dict, size: tuple[int, int], padded: tuple[int, int]) -> np.ndarray:
    """One frame -> [1, C, H, W] float32 model input (resized, normalised, edge-padded)."""
    h, w = bgr.shape[:2]
    out_w, out_h = size
    pad_w, pad_h = padded
    interp = cv2.INTER_AREA if out_w < w else cv2.INTER_LINEAR
    scale, mean, std = spec["scale"], spec["mean"], spec["std"]
    planes = []
    for plane in channel_planes(bgr, spec["channels"]):
        if (out_w, out_h) != (w, h):
            plane = cv2.resize(plane, (out_w, out_h), interpolation=interp)
        plane = (plane * scale - mean) / std
        if (pad_w, pad_h) != (out_w, out_h):
            plane = np.pad(plane, ((0, pad_h - out_h), (0, pad_w - out_w)), mode="edge")
        planes.append(plane)
    return np.ascontiguousarray(np.stack(planes)[np.newaxis], dtype=np.float32)


def count(prob: np.ndarray, size: tuple[int, int], um_per_px: float, card: dict) -> tuple[int, float]:
    """Capillary count and area fraction of one [1, 1, H, W] probability map (crops the padding first)."""
    out_w, out_h = size
    valid = prob[0, 0, :out_h, :out_w]
    threshold = card["output"]["threshold"]
    post = card["postprocess"]
    link = post.get("link_threshold", threshold)
    core = valid > threshold
    if link < threshold:
        # Hysteresis: components of prob > link that hold core pixels, each measured by its core pixels.
        _, labels = cv2.connectedComponents((valid > link).astype(np.uint8), connectivity=8)
        areas = np.bincount(labels[core])[1:]
        areas = areas[areas > 0]
    else:
        _, _, stats, _ = cv2.connectedComponentsWithStats(core.astype(np.uint8), connectivity=8)
        areas = stats[1:, cv2.CC_STAT_AREA]  # label 0 is the background
    areas_um2 = areas * (um_per_px * um_per_px)
    kept = areas[(areas_um2 >= post["min_area_um2"]) & (areas_um2 <= post["max_area_um2"])]
    return int(kept.size), float(kept.sum()) / (out_w * out_h)


# -------------------------------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(
        description="Frame-by-frame OpenCV + onnxruntime baseline for capflow's segmentation benchmark.",
    )
    parser.add_argument("clip", type=Path, help="video file to analyse (anything OpenCV/FFmpeg decodes)")
    parser.add_argument("--card", type=Path, default=DEFAULT_CARD, help="model card TOML (default: %(default)s)")
    parser.add_argument("--um-per-px", type=float, default=2.2, help="pixel size of the clip, µm (default 2.2)")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads (default 1)")
    parser.add_argument("--frames", type=int, default=None, help="analyse at most this many frames")
    parser.add_argument("--warmup", type=int, default=2, help="untimed warm-up inferences before the loop (default 2)")
    parser.add_argument("--per-frame", type=Path, default=None, help="also write frame,count,area_fraction CSV here")
    args = parser.parse_args()

    card = load_card(args.card)
    spec = card["input"]

    if not args.clip.is_file():
        sys.exit(f"bench_baseline.py: clip {args.clip} not found.\nFix: make one with `capflow synth` (see --help)")
    cap = cv2.VideoCapture(str(args.clip))
    if not cap.isOpened():
        sys.exit(
            f"bench_baseline.py: OpenCV cannot open {args.clip}.\n"
            "Fix: check the file is a complete video; opencv-python-headless decodes through its bundled FFmpeg "
            "(check `cv2.getBuildInformation()` lists FFMPEG: YES)"
        )
    w = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
    h = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    if w <= 0 or h <= 0:
        sys.exit(f"bench_baseline.py: OpenCV reports no frame size for {args.clip}; it cannot decode it")

    size = working_size(w, h, args.um_per_px, spec)
    multiple, min_size = max(1, spec.get("pad_multiple", 1)), spec.get("min_size", 1)
    padded = tuple(-(-max(v, min_size) // multiple) * multiple for v in size)
    um = args.um_per_px * w / size[0]  # exact working pixel size after rounding the width
    print(
        f"{args.clip.name}: {w}x{h} at {args.um_per_px} um/px -> working size {size[0]}x{size[1]} "
        f"({um:.4f} um/px), model input {padded[0]}x{padded[1]}, card {card['name']}",
        file=sys.stderr,
    )

    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, args.threads)
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session = ort.InferenceSession(str(card["onnx_path"]), options, providers=["CPUExecutionProvider"])
    input_name, output_name = spec["name"], card["output"]["name"]
    zeros = np.zeros((1, len(spec["channels"]), padded[1], padded[0]), dtype=np.float32)
    for _ in range(max(0, args.warmup)):
        session.run([output_name], {input_name: zeros})

    t_decode = t_pre = t_infer = t_post = 0.0
    counts: list[int] = []
    fractions: list[float] = []
    start = time.perf_counter()
    while args.frames is None or len(counts) < args.frames:
        t0 = time.perf_counter()
        ok, bgr = cap.read()
        t1 = time.perf_counter()
        t_decode += t1 - t0
        if not ok:
            break
        x = preprocess(bgr, spec, size, padded)
        t2 = time.perf_counter()
        (prob,) = session.run([output_name], {input_name: x})
        t3 = time.perf_counter()
        n, fraction = count(prob, size, um, card)
        t4 = time.perf_counter()
        t_pre, t_infer, t_post = t_pre + (t2 - t1), t_infer + (t3 - t2), t_post + (t4 - t3)
        counts.append(n)
        fractions.append(fraction)
    seconds = time.perf_counter() - start
    cap.release()

    if not counts:
        sys.exit(f"bench_baseline.py: no frames could be decoded from {args.clip}")
    if args.per_frame:
        with open(args.per_frame, "w") as f:
            f.write("frame,count,area_fraction\n")
            f.writelines(f"{i},{n},{a!r}\n" for i, (n, a) in enumerate(zip(counts, fractions)))

    frames = len(counts)
    print(
        json.dumps(
            {
                "clip": str(args.clip),
                "card": card["name"],
                "frames": frames,
                "seconds": round(seconds, 4),
                "fps": round(frames / seconds, 2),
                "decode_s": round(t_decode, 4),
                "preprocess_s": round(t_pre, 4),
                "inference_s": round(t_infer, 4),
                "postprocess_s": round(t_post, 4),
                "frame_size": [w, h],
                "working_size": list(size),
                "working_um_per_px": round(um, 6),
                "mean_count": sum(counts) / frames,
                "mean_area_fraction": sum(fractions) / frames,
                "threads": max(1, args.threads),
                "warmup": max(0, args.warmup),
                "opencv": cv2.__version__,
                "onnxruntime": ort.__version__,
                "numpy": np.__version__,
                "python": sys.version.split()[0],
            }
        )
    )


if __name__ == "__main__":
    main()
