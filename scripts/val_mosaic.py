#!/usr/bin/env python3
"""Mosaic of a model on validation frames: input | ground truth | color | overlay per row.

    python scripts/val_mosaic.py --checkpoint models/camvid_lite0.pt --dataset camvid \
        --rows 4 --out docs/camvid_mosaic.png
    python scripts/val_mosaic.py --checkpoint models/drivable_lite0.pt \
        --dataset kitti_road camvid_drivable --rows 2 --tile-width 320 --out docs/drivable_mosaic.png

Frames are picked evenly over the dataset's val split (never trained on), segmented with
``Segmenter.predict`` exactly as the node does (checkpoint's inference size, outputs at frame
size), and the ground truth is drawn with the checkpoint's own palette (ignore = black). With
several datasets (cameras), each gets its rows and the blocks are stacked.
"""

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pspnet_ros.tools.data.datasets import build_dataset  # noqa: E402
from pspnet_ros.tools.demo import write_mosaic  # noqa: E402
from pspnet_ros.inference.segmenter import Segmenter  # noqa: E402
from pspnet_ros.paths import data_root  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--dataset", required=True, nargs="+", choices=("camvid", "kitti_road", "camvid_drivable"))
    p.add_argument("--split", default="val")
    p.add_argument("--rows", type=int, default=4)
    p.add_argument("--tile-width", type=int, default=480)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    seg = Segmenter.from_checkpoint(args.checkpoint, device="cpu")
    palette = np.asarray(seg.meta["palette"], np.uint8)
    blocks = []
    for name in args.dataset:
        ds = build_dataset(name, data_root(None), args.split)
        picks = np.linspace(0, len(ds) - 1, args.rows).round().astype(int)
        rows = []
        for i in picks:
            image, mask = ds.load(int(i))
            res = seg.predict([image])[0]
            gt = np.zeros(mask.shape + (3,), np.uint8)
            known = mask < len(palette)
            gt[known] = palette[mask[known]]
            rows.append({"input": image, "ground truth": gt, "color": res.color, "overlay": res.overlay})
            print(f"{name} {ds.stem(int(i))}: pixel accuracy {float((res.labels == mask)[known].mean()):.3f}")
        part = Path(args.out).with_suffix(f".{name}.tmp.png")
        write_mosaic(part, rows, tile_width=args.tile_width, columns=("input", "ground truth", "color", "overlay"))
        blocks.append(part)
    from PIL import Image

    images = [Image.open(b).convert("RGB") for b in blocks]
    canvas = Image.new("RGB", (max(im.width for im in images), sum(im.height for im in images)), (255, 255, 255))
    y = 0
    for im in images:
        canvas.paste(im, (0, y))
        y += im.height
    out = Path(args.out)
    canvas.save(out)
    for b in blocks:
        b.unlink()
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
