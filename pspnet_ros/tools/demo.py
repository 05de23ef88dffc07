"""``make demo``: the whole pipeline on a short real driving sequence, in a few minutes on a CPU.

    make demo                                   # = .venv/bin/python -m pspnet_ros.tools.demo
    python -m pspnet_ros.tools.demo --frames 3        # reduced run (CI)
    python -m pspnet_ros.tools.demo --checkpoint my.pt --rate 2

1. turns the shipped KITTI road frames (data/sample/kitti_road, validation split, CC BY-NC-SA 3.0)
   into a rosbag2 with ``pspnet make-bag``;
2. starts ``segmentation_node`` as its own process with ``--ros-args --params-file
   demo_out/demo_params.yaml`` (the shipped KITTI road model, sim time);
3. replays the bag to it over DDS with a reliable publisher and /clock, like
   ``ros2 bag play --clock``, and records every output topic;
4. writes ``demo_out/``: overlay.mp4 (H.264), mosaic.png (input | color | overlay | drivable |
   bev), summary.json, and prints the summary table.

With the sample's KITTI calibration (``data/sample/kitti_road/calib``) the node also runs with
``bev.enable`` and the transform ``pspnet make-bag --bev-params`` writes (demo_out/bev_params.yaml);
the mosaic's bev column is the camera image seen from above with the node's
``segmentation/drivable_grid`` on it (magenta drivable, red not drivable, grey unknown).

Everything runs on a private ROS_DOMAIN_ID with localhost-only discovery, so it neither sees nor
disturbs other ROS 2 systems on the network.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from pspnet_ros.tools.bags import messages, storage
from pspnet_ros.paths import sample_dir

LOGGER = logging.getLogger("pspnet_ros.tools.demo")

REPO = Path(__file__).resolve().parents[1]
SAMPLE = sample_dir()
IMAGE_TOPIC = "/camera/image_raw"
INFO_TOPIC = "/camera/camera_info"
# Fixed stamps make the demo bag byte-identical run to run; the node runs on the bag's /clock.
START_NS = 1_317_000_000_000_000_000  # 2011-09-26, when KITTI's sequences were recorded
COLUMNS = ("input", "color", "overlay", "drivable")
BEV_COLUMN = "bev"
GRID_TOPIC = "/segmentation/drivable_grid"
BEV_COLORS = {0: (255, 0, 255), 100: (255, 0, 0)}  # the KITTI road palette: road, not road


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pspnet_ros.tools.demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder (demo_out)")
    p.add_argument("--sample", type=Path, default=SAMPLE,
                   help="folder of frames to use (default: the shipped KITTI road sample)")
    p.add_argument("--frames", type=int, default=None, help="use only the first N frames")
    p.add_argument("--rate", type=float, default=5.0,
                   help="camera rate in Hz the bag is stamped and replayed at (default 5)")
    p.add_argument("--checkpoint", default="auto",
                   help="model checkpoint (default auto: the shipped KITTI road model)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--inference-size", type=int, nargs=2, metavar=("H", "W"), default=None,
                   help="network input size (default: the checkpoint's)")
    p.add_argument("--drop-policy", choices=("latest", "queue"), default="latest",
                   help="the node's policy when frames come faster than it segments them "
                        "(default latest, as on a robot: drops are counted and reported)")
    p.add_argument("--domain-id", type=int, default=None,
                   help="ROS_DOMAIN_ID for the demo (default: a random private one)")
    p.add_argument("--startup-timeout", type=float, default=300.0,
                   help="seconds to wait for the node to load the model")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


# --------------------------------------------------------------------------- steps

def resolve_model(checkpoint: str, device: str) -> Path:
    """Return the checkpoint to run, or raise SystemExit with what to do when no model is shipped yet."""
    from pspnet_ros.paths import ModelNotFoundError, resolve_checkpoint, resolve_device

    try:
        path = resolve_checkpoint(checkpoint, "kitti_road", resolve_device(device))
    except ModelNotFoundError as exc:
        raise SystemExit(
            f"demo: no shipped KITTI road model ({exc}).\n"
            "The shipped models are produced by training (see the README, 'Train on your own "
            "data'); until one is in models/, run the demo with a checkpoint of your own:\n"
            "    .venv/bin/python -m pspnet_ros.tools.demo --checkpoint PATH/TO/model.pt") from None
    if not path.is_file():
        raise SystemExit(f"demo: checkpoint {path} does not exist")
    return path


def make_sample_bag(out: Path, sample: Path, frames: Optional[int], rate: float) -> Path:
    """Write ``out/sample_bag`` from the frames in ``sample`` (KITTI P2 camera_info)."""
    from pspnet_ros.tools.bags.make_bag import iter_frames, write_bag

    bag = out / "sample_bag"
    n = write_bag(bag, iter_frames([sample]), topic=IMAGE_TOPIC, rate=rate, start_ns=START_NS,
                  frame_id="camera", fmt="mcap", camera_info="kitti", inputs=[sample],
                  limit=frames, overwrite=True, progress=False)
    LOGGER.info("sample bag: %d frames of %s at %g Hz -> %s", n, sample, rate, bag)
    return bag


def make_bev_params(out: Path, sample: Path) -> Optional[Path]:
    """``pspnet make-bag --bev-params`` for the sample: None when its frames have no calibration."""
    from pspnet_ros.tools.bags.make_bag import find_kitti_calib, write_bev_params
    from pspnet_ros.errors import InputError

    try:
        calib = find_kitti_calib(None, [sample])
    except InputError as exc:
        LOGGER.info("no bird's-eye view in this demo: %s", exc)
        return None
    return write_bev_params(out / "bev_params.yaml", calib)


def write_params(path: Path, checkpoint: Path, device: str, drop_policy: str,
                 inference_size: Optional[Sequence[int]], bev_params: Optional[Path] = None) -> Path:
    """Write the node's parameters file (bev.* merged in from ``bev_params`` when given)."""
    import yaml

    params = {
        "checkpoint": str(checkpoint.resolve()),
        "device": device,
        "drop_policy": drop_policy,
        "qos_reliability": "reliable",  # the demo's replay publishes reliable, like a camera
        "output_resolution": "input",
        "publish_confidence": False,
        "diagnostics_period": 1.0,
        "use_sim_time": True,  # the replay publishes /clock from the bag, as ros2 bag play --clock
    }
    if inference_size:
        params["inference_size"] = [int(v) for v in inference_size]
    if bev_params is not None:
        params.update(yaml.safe_load(bev_params.read_text())["/**"]["ros__parameters"])
    path.write_text("# Written by `make demo` (python -m pspnet_ros.tools.demo); see config/pspnet.yaml\n"
                    + yaml.safe_dump({"/**": {"ros__parameters": params}}, sort_keys=False))
    return path


def bag_frames(bag: Path) -> Dict[int, np.ndarray]:
    """Header stamp -> RGB input frame of the demo bag."""
    reader = storage.open_reader(bag)
    try:
        conns = [c for c in reader.connections if c.topic == IMAGE_TOPIC]
        frames = {}
        for c, _, data in reader.messages(connections=conns):
            msg = messages.deserialize(data, c.msgtype)
            frames[messages.header_ns(msg)] = np.array(messages.msg_to_rgb(msg, c.msgtype))
        return frames
    finally:
        reader.close()


def write_video(path: Path, frames: List[np.ndarray], fps: float) -> Path:
    """H.264 MP4 of ``frames`` (the package's one writer, ``inference.media.VideoWriter``)."""
    from .media import VideoWriter

    with VideoWriter(path, fps) as writer:
        for f in frames:
            writer.write(f)
    return path


def bev_panel(frame: np.ndarray, occupancy: np.ndarray, projector, alpha: float = 0.45) -> np.ndarray:
    """(H, W, 3) uint8 top view: ``frame`` warped onto the grid, ``occupancy`` tinted on it.

    Oriented as RViz draws the grid from above (forward right, left up), with a white line every
    10 m ahead for scale.
    """
    top = projector.warp_image(frame).astype(np.float32)
    for value, color in BEV_COLORS.items():
        cells = occupancy == value
        top[cells] = (1 - alpha) * top[cells] + alpha * np.asarray(color, np.float32)
    top[occupancy < 0] = (96, 96, 96)
    xs, _ = projector.grid.cell_centers()
    res = projector.grid.resolution
    for x in range(int(np.ceil(xs[0] / 10.0)) * 10, int(xs[-1]) + 1, 10):
        top[:, np.abs(xs - x) < res / 2] = 255
    return np.ascontiguousarray(top[::-1].astype(np.uint8))


def write_mosaic(path: Path, rows: List[Dict[str, np.ndarray]], tile_width: int = 480,
                 columns: Sequence[str] = COLUMNS) -> Path:
    """Save a figure with one row per frame and one titled column per key of ``columns``.

    The default columns are input | color | overlay | drivable; (H, W) arrays are shown as grey.
    Columns whose arrays have another aspect than the input (the bev panel) keep it: their tiles
    are as high, not as wide.
    """
    cols = tuple(columns)
    from PIL import Image, ImageDraw, ImageFont

    h0, w0 = rows[0]["input"].shape[:2]
    tw, th = tile_width, int(round(h0 * tile_width / w0))
    widths = [tw if rows[0][c].shape[:2] == (h0, w0) else
              int(round(th * rows[0][c].shape[1] / rows[0][c].shape[0])) for c in cols]
    lefts = [sum(widths[:j]) + j * 4 for j in range(len(cols))]
    title_h, gap = 28, 4
    canvas = Image.new("RGB", (sum(widths) + (len(cols) - 1) * gap,
                               title_h + len(rows) * (th + gap)), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    try:
        font = ImageFont.load_default(size=18)
    except TypeError:  # Pillow < 10.1
        font = ImageFont.load_default()
    for j, name in enumerate(cols):
        title = name if name != BEV_COLUMN else "bev (6-46 m ahead, right)"
        draw.text((lefts[j] + 6, 4), title, fill=(0, 0, 0), font=font)
    for i, row in enumerate(rows):
        for j, name in enumerate(cols):
            arr = row[name]
            if arr.ndim == 2:
                arr = np.repeat(arr[:, :, None], 3, axis=2)
            tile = Image.fromarray(arr).resize((widths[j], th), Image.BILINEAR)
            canvas.paste(tile, (lefts[j], title_h + i * (th + gap)))
    canvas.save(path, optimize=True)
    return path


def pick_rows(stamps: List[int], n: int = 3) -> List[int]:
    if len(stamps) <= n:
        return stamps
    idx = np.linspace(0, len(stamps) - 1, n).round().astype(int)
    return [stamps[i] for i in idx]


def summarize(res, inputs: Dict[int, np.ndarray], *, rate: float, checkpoint: Path,
              args, wall_s: float) -> dict:
    kinds = res.kinds
    published = sorted(res.published)
    complete = [s for s in published if len(res.outputs.get(s, {})) == len(kinds)]
    partial = [s for s in published if 0 < len(res.outputs.get(s, {})) < len(kinds)]
    latencies = [1000.0 * (res.received[s]["labels"] - res.published[s]) for s in complete]
    # Output rate on the labels topic, the same arrivals as the latency: a single slow
    # repair of another topic's last frame would otherwise stretch the whole run.
    done_times = sorted(res.received[s]["labels"] for s in complete)
    fps = ((len(done_times) - 1) / (done_times[-1] - done_times[0])
           if len(done_times) > 1 and done_times[-1] > done_times[0] else 0.0)
    pct = {f"p{q}": round(float(np.percentile(latencies, q)), 1) for q in (50, 95, 99)} \
        if latencies else {}
    class_info = json.loads(res.class_info) if res.class_info else {}
    h, w = next(iter(inputs.values())).shape[:2] if inputs else (0, 0)
    return {
        "frames_in": len(published),
        "frames_out": len(complete),
        "drops": len(published) - len(complete) - len(partial),
        "partial_frames": len(partial),
        "partial_missing": {str(s): sorted(set(kinds) - set(res.outputs[s])) for s in partial},
        "outputs": list(kinds),
        "input_rate_hz": rate,
        "output_fps": round(fps, 2),
        "latency_ms": pct,
        "latency_definition": "replay publish -> segmentation/labels received (same host, wall clock)",
        "stamps_in": published,
        "stamps_out": complete,
        "exact_stamps": all(s in inputs for s in res.outputs),
        "frame_size": [h, w],
        "model": class_info.get("model"),
        "classes": class_info.get("classes"),
        "inference_size": class_info.get("inference_size"),
        "checkpoint": str(checkpoint),
        "drop_policy": args.drop_policy,
        "node_diagnostics": res.diagnostics,
        "node_startup_s": round(res.startup_s, 1),
        "warmup_frames": res.warmup_frames,
        "replay_s": round(res.replay_s, 2),
        "wall_s": round(wall_s, 1),
        "node_exit_code": res.node_returncode,
    }


def table(summary: dict, out: Path) -> str:
    lat = summary["latency_ms"]
    rows = [
        ("frames in", f"{summary['frames_in']}  ({summary['frame_size'][1]}x{summary['frame_size'][0]}"
                      f" rgb8 at {summary['input_rate_hz']:g} Hz, reliable)"),
        ("frames out", f"{summary['frames_out']}  ({', '.join(summary['outputs'])}; stamps "
                       f"{'exact' if summary['exact_stamps'] else 'MISMATCHED'})"),
        ("drops", f"{summary['drops']}" + (f" (+{summary['partial_frames']} partial)"
                                           if summary["partial_frames"] else "")
         + f"  (drop_policy {summary['drop_policy']})"),
        ("output FPS", f"{summary['output_fps']:.2f}"),
        ("latency ms", "  ".join(f"{k} {v:.0f}" for k, v in lat.items()) or "n/a"),
        ("model", f"{summary['model']}  inference {summary['inference_size']}"),
        ("time", f"{summary['wall_s']:.0f} s total, node start {summary['node_startup_s']:.0f} s"),
    ]
    width = max(len(k) for k, _ in rows)
    lines = ["", "pspnet_ros demo: KITTI road sample -> rosbag2 -> segmentation_node over DDS", ""]
    lines += [f"  {k:<{width}}  {v}" for k, v in rows]
    columns = " | ".join(COLUMNS + ((BEV_COLUMN,) if "drivable_grid" in summary["outputs"] else ()))
    lines += ["", f"  look at:  {out / 'mosaic.png'}   ({columns})",
              f"            {out / 'overlay.mp4'}",
              f"            {out / 'summary.json'},  node log {out / 'node.log'}", ""]
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    args = get_args_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    t0 = time.monotonic()
    if args.frames is not None and args.frames < 1:
        raise SystemExit("demo: --frames must be >= 1")
    checkpoint = resolve_model(args.checkpoint, args.device)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    for name in ("overlay.mp4", "mosaic.png", "summary.json"):
        (out / name).unlink(missing_ok=True)
    bag = make_sample_bag(out, args.sample, args.frames, args.rate)
    bev_params = make_bev_params(out, args.sample)
    params = write_params(out / "demo_params.yaml", checkpoint, args.device, args.drop_policy,
                          args.inference_size, bev_params)
    domain = args.domain_id if args.domain_id is not None else _private_domain()
    LOGGER.info("ROS_DOMAIN_ID=%d (private, localhost only)", domain)

    from pspnet_ros.tools.ros.demo_session import SessionError, run_session

    try:
        res = run_session(bag, params, workdir=out, domain_id=domain, rate=1.0,
                          image_topic=IMAGE_TOPIC, info_topic=INFO_TOPIC,
                          startup_timeout=args.startup_timeout,
                          grid_topic=GRID_TOPIC if bev_params is not None else None)
    except SessionError as exc:
        LOGGER.error("%s", exc)
        return 1
    inputs = bag_frames(bag)
    summary = summarize(res, inputs, rate=args.rate, checkpoint=checkpoint, args=args,
                        wall_s=time.monotonic() - t0)
    done = summary["stamps_out"]
    if done:
        write_video(out / "overlay.mp4", [res.outputs[s]["overlay"] for s in done], args.rate)
        rows = [dict(input=inputs[s], **res.outputs[s]) for s in pick_rows(done)]
        columns = COLUMNS
        if bev_params is not None:
            projector = _bev_projector(bev_params, inputs[done[0]].shape[:2])
            for row in rows:
                row[BEV_COLUMN] = bev_panel(row["input"], row["drivable_grid"], projector)
            columns = COLUMNS + (BEV_COLUMN,)
            summary["bev"] = {"grid_topic": GRID_TOPIC, "params": str(bev_params),
                              "grid": {"frame_id": projector.grid.frame_id,
                                       "resolution": projector.grid.resolution,
                                       "width": projector.grid.width, "height": projector.grid.height}}
        write_mosaic(out / "mosaic.png", rows, columns=columns)
    summary["wall_s"] = round(time.monotonic() - t0, 1)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(table(summary, out))
    if not done:
        LOGGER.error("no frame came back from the node; see %s", out / "node.log")
        return 1
    return 0


def _bev_projector(bev_params: Path, size):
    """Build the node's projection for the bag's camera (KITTI P2 at ``size``) and ``bev_params``."""
    import yaml

    from pspnet_ros import bev
    from pspnet_ros.tools.bags.calibration import KITTI_P2

    values = yaml.safe_load(bev_params.read_text())["/**"]["ros__parameters"]["bev"]
    intr = KITTI_P2.scaled(size[1], size[0])
    k = [[intr.fx, 0, intr.cx], [0, intr.fy, intr.cy], [0, 0, 1]]
    return bev.projector(k, size, values["camera_to_ground"], bev.GridSpec(frame_id=values["frame_id"]))


def _private_domain() -> int:
    """Return the tools' private domain scheme (pspnet_ros.tools.ros.node_process.private_domain)."""
    from .ros.node_process import private_domain

    return private_domain(os.getpid() ^ time.time_ns())


if __name__ == "__main__":
    sys.exit(main())
