"""Trains capillary-seg-v1 on frames from `capflow synth --dataset` and exports it to ONNX.

Reproducible: the same data, seed, step count, thread count and torch version give the same
weights (deterministic algorithms, one data-loading thread, no wall-clock stopping).

    python models/train/train.py --data .model-data/train --val .model-data/val \
        --out models/capillary-seg-v1.onnx --steps 32000
"""

import argparse
import csv
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from contract import channels, resize, working_size  # noqa: E402
from net import CapillaryNet, export  # noqa: E402


def load_set(folder, limit=None):
    """Every image of a dataset folder at its working pixel size: (look, [green, red, mask] uint8)."""
    rows = list(csv.DictReader(open(os.path.join(folder, "index.csv"))))
    if limit:
        rows = rows[:limit]
    items = []
    for row in rows:
        rgb = np.asarray(Image.open(os.path.join(folder, "images", row["file"])).convert("RGB"))
        mask = np.asarray(Image.open(os.path.join(folder, "masks", row["file"])).convert("L")) > 127
        h, w = mask.shape
        ww, wh = working_size(w, h, float(row["um_per_px"]))
        g, red = channels(rgb)
        planes = [resize(g, ww, wh), resize(red, ww, wh), resize(mask.astype(np.float32) * 255.0, ww, wh)]
        # Rounded to 8 bits so that 1,600 frames fit in memory; the pipeline keeps the fractions
        # (at most half a grey level apart, well inside the brightness/noise augmentation).
        stack = np.stack(planes).round().clip(0, 255).astype(np.uint8)
        # A sample of vessel pixels, so that half of the crops can be centred on a vessel (skin frames
        # are ~99 % background: random crops alone rarely show the network a capillary).
        vessel = np.argwhere(stack[2] > 127)
        if len(vessel) > 4096:
            vessel = vessel[np.linspace(0, len(vessel) - 1, 4096).astype(int)]
        items.append((row["look"], stack, vessel))
    return items


def sample_batch(items, rng, batch, crop):
    """Random crops with scale, flip, rotation, exposure, gamma and noise augmentation."""
    xs, ys = [], []
    for _ in range(batch):
        _, stack, vessel = items[rng.integers(len(items))]
        _, h, w = stack.shape
        zoom = float(np.exp(rng.uniform(np.log(0.8), np.log(1.25))))
        size = min(int(round(crop * zoom)), h, w)
        if len(vessel) and rng.random() < 0.5:
            cy, cx = vessel[rng.integers(len(vessel))]
            cy += rng.integers(-size // 3, size // 3 + 1)
            cx += rng.integers(-size // 3, size // 3 + 1)
            y0 = int(np.clip(cy - size // 2, 0, h - size))
            x0 = int(np.clip(cx - size // 2, 0, w - size))
        else:
            y0 = rng.integers(0, h - size + 1)
            x0 = rng.integers(0, w - size + 1)
        t = torch.from_numpy(stack[:, y0:y0 + size, x0:x0 + size].astype(np.float32) / 255.0)[None]
        if size != crop:
            t = F.interpolate(t, size=(crop, crop), mode="bilinear", antialias=size > crop, align_corners=False)
        t = t[0]
        if rng.random() < 0.5:
            t = t.flip(2)
        if rng.random() < 0.5:
            t = t.flip(1)
        t = torch.rot90(t, int(rng.integers(4)), dims=(1, 2))
        g, red, m = t[0], t[1], t[2]
        g = g.clamp(1e-4, 1.0) ** float(np.exp(rng.uniform(-0.35, 0.35)))
        g = (g * rng.uniform(0.7, 1.3) + rng.uniform(-0.1, 0.1)).clamp(0, 1)
        g = (g + torch.from_numpy(rng.normal(0, rng.uniform(0, 0.025), g.shape).astype(np.float32))).clamp(0, 1)
        red = (red * rng.uniform(0.75, 1.3)).clamp(0, 1)
        xs.append(torch.stack([g, red]))
        ys.append((m > 0.5).float()[None])
    return torch.stack(xs), torch.stack(ys)


def dice_loss(logits, target):
    """Soft Dice per crop, averaged: a sparse skin crop weighs as much as a dense sublingual one."""
    p = torch.sigmoid(logits)
    inter = (p * target).sum(dim=(1, 2, 3))
    total = p.sum(dim=(1, 2, 3)) + target.sum(dim=(1, 2, 3))
    return (1.0 - (2 * inter + 10.0) / (total + 10.0)).mean()


@torch.no_grad()
def evaluate(model, items):
    """Pixel Dice per look at working resolution (the exact native-resolution scores come from `capflow eval`)."""
    model.eval()
    per_look = {}
    for look, stack, _ in items:
        _, h, w = stack.shape
        ph, pw = -(-h // 16) * 16, -(-w // 16) * 16
        x = torch.from_numpy(stack[:2].astype(np.float32) / 255.0)[None]
        x = F.pad(x, (0, pw - w, 0, ph - h), mode="replicate")
        pred = (model(x)[0, 0, :h, :w] > 0).numpy()
        truth = stack[2] > 127
        inter = (pred & truth).sum()
        d = 2 * inter / max(pred.sum() + truth.sum(), 1)
        per_look.setdefault(look, []).append(d)
    model.train()
    return {k: float(np.mean(v)) for k, v in sorted(per_look.items())}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--val")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--steps", type=int, default=32000)
    ap.add_argument("--batch", type=int, default=10)
    ap.add_argument("--crop", type=int, default=224)
    ap.add_argument("--lr", type=float, default=4e-3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--channels", default="8,16,48,96")
    ap.add_argument("--log", help="write training curve and validation scores as JSON here")
    args = ap.parse_args()
    if args.steps < 40:
        ap.error("--steps must be at least 40 (the one-cycle learning-rate schedule needs a warm-up phase)")

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    rng = np.random.default_rng(args.seed)

    t0 = time.time()
    train = load_set(args.data)
    val = load_set(args.val) if args.val else []
    print(f"loaded {len(train)} training and {len(val)} validation frames in {time.time() - t0:.0f} s", flush=True)

    model = CapillaryNet(tuple(int(c) for c in args.channels.split(",")))
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.steps, pct_start=0.05)
    history = []
    t0 = time.time()
    running, since = 0.0, 0
    for step in range(1, args.steps + 1):
        x, y = sample_batch(train, rng, args.batch, args.crop)
        logits = model(x)
        loss = F.binary_cross_entropy_with_logits(logits, y) + dice_loss(logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        running, since = running + loss.item(), since + 1
        if step % 250 == 0 or step == args.steps:
            row = {"step": step, "loss": running / since, "seconds": round(time.time() - t0)}
            running, since = 0.0, 0
            if val and (step % 2000 == 0 or step == args.steps):
                row["val_dice"] = evaluate(model, val)
            history.append(row)
            print(json.dumps(row), flush=True)

    model.eval()
    export(model, args.out)
    print(f"exported {args.out} ({os.path.getsize(args.out)} bytes)", flush=True)
    if args.log:
        with open(args.log, "w") as f:
            json.dump({"args": vars(args), "history": history, "torch": torch.__version__}, f, indent=1)


if __name__ == "__main__":
    main()
