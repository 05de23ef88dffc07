#!/usr/bin/env python3
"""Copy a run's best checkpoint into models/ as fp16 weights with provenance metadata.

    python scripts/ship_model.py runs/kitti_road_mobilenetv3_cpu models/kitti_road_mobilenetv3_cpu.pt \
        --command "pspnet train config/kitti_road_mobilenetv3_cpu.yaml" --hardware "2-core CPU"

Adds meta["training"] = {command, hardware, date, train_time_s, epochs} and prints the size.
"""

import argparse
import csv
import datetime as dt
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pspnet_ros.models import load_model, save_checkpoint  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir")
    p.add_argument("out")
    p.add_argument("--command", required=True)
    p.add_argument("--hardware", required=True)
    p.add_argument("--which", default="best.pt")
    args = p.parse_args()
    run = Path(args.run_dir)
    model, meta = load_model(run / args.which)
    rows = list(csv.DictReader((run / "log.csv").open())) if (run / "log.csv").exists() else []
    meta["training"] = {
        "command": args.command,
        "hardware": args.hardware,
        "date": dt.date.today().isoformat(),
        "train_time_s": float(rows[-1]["elapsed_s"]) if rows else None,
        "epochs_run": int(rows[-1]["epoch"]) if rows else None,
    }
    out = save_checkpoint(args.out, model, meta, half=True)
    print(f"{out}: {out.stat().st_size / 1e6:.1f} MB, metrics {meta.get('metrics')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
