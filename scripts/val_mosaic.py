#!/usr/bin/env python3
"""Mosaic of a model on validation frames: input | ground truth | color | overlay per row.

    python scripts/val_mosaic.py --checkpoint models/camvid_lite0.pt --dataset camvid \
        --rows 4 --out docs/camvid_mosaic.png

Frames are picked evenly over the dataset's val split (never trained on), segmented with
``Segmenter.predict`` exactly as the node does (checkpoint's inference size, outputs at frame
size), and the ground truth is drawn with the checkpoint's own palette (ignore = black).
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
    p.add_argument("--dataset", required=True, choices=("camvid", "kitti_road"))
    p.add_argument("--split", default="val")
    p.add_argument("--rows", type=int, default=4)
    p.add_argument("--tile-width", type=int, default=480)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    seg = Segmenter.from_checkpoint(args.checkpoint, device="cpu")
    palette = np.asarray(seg.meta["palette"], np.uint8)
    ds = build_dataset(args.dataset, data_root(None), args.split)
    picks = np.linspace(0, len(ds) - 1, args.rows).round().astype(int)
    rows = []
    for i in picks:
        image, mask = ds.load(int(i))
        res = seg.predict([image])[0]
        gt = np.zeros(mask.shape + (3,), np.uint8)
        known = mask < len(palette)
        gt[known] = palette[mask[known]]
        rows.append({"input": image, "ground truth": gt, "color": res.color, "overlay": res.overlay})
        print(f"{ds.stem(int(i))}: pixel accuracy {float((res.labels == mask)[known].mean()):.3f}")
    out = write_mosaic(Path(args.out), rows, tile_width=args.tile_width,
                       columns=("input", "ground truth", "color", "overlay"))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
