"""``pspnet infer INPUT... --out DIR``: segment images, folders and videos without ROS.

Per image ``NAME``: ``NAME_labels.png`` (class indices), ``NAME_color.png`` (palette),
``NAME_overlay.png`` and ``NAME_mosaic.png`` (input | color | overlay side by side).
Per video: ``NAME_overlay.mp4`` and ``NAME_mosaic.mp4`` (H.264), ``NAME_color.mp4`` if asked,
and with ``--video-labels`` one label PNG per frame in ``NAME_labels/``.

Frames go through the RealtimeEngine with the ``queue`` policy (nothing dropped, order kept),
so reading and writing files overlaps the network.
"""

from __future__ import annotations

import argparse
import logging
import queue
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional


log = logging.getLogger(__name__)

CHOICES = ("labels", "color", "overlay", "mosaic")


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pspnet infer", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or video files")
    p.add_argument("--out", required=True, help="output folder (created)")
    p.add_argument("--checkpoint", default="auto",
                   help="checkpoint file, or 'auto' for the shipped model of --dataset for the device")
    p.add_argument("--dataset", default="kitti_road", help="dataset of the shipped model ('auto')")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "fp16", "bf16", "int8"),
                   help="auto: int8 on CPU when the checkpoint's accuracy-checked .int8.onnx exists, else fp32")
    p.add_argument("--size", default=None, help="inference size HxW (default: the checkpoint's)")
    p.add_argument("--backend", default="auto", choices=("auto", "torch", "onnxruntime", "openvino"))
    p.add_argument("--outputs", default="labels,color,overlay,mosaic",
                   help=f"comma-separated subset of {','.join(CHOICES)}")
    p.add_argument("--alpha", type=float, default=0.5, help="overlay colour weight 0..1")
    p.add_argument("--upsample", default="logits", choices=("logits", "labels"))
    p.add_argument("--batch", type=int, default=4, help="max frames per forward pass")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    p.add_argument("--recursive", action="store_true", help="descend into sub-folders")
    p.add_argument("--video-labels", action="store_true", help="also write a label PNG per video frame")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


class _Writer:
    """Writes results as they arrive (main thread)."""

    def __init__(self, out: Path, wanted: set, video_labels: bool) -> None:
        self.out, self.wanted, self.video_labels = out, wanted, video_labels
        self.videos: Dict[str, Dict[str, Any]] = {}
        self.written = 0

    def image(self, name: str, res) -> None:
        from .media import mosaic, write_png

        if "labels" in self.wanted:
            write_png(self.out / f"{name}_labels.png", res.labels)
        if "color" in self.wanted:
            write_png(self.out / f"{name}_color.png", res.color)
        if "overlay" in self.wanted:
            write_png(self.out / f"{name}_overlay.png", res.overlay)
        if "mosaic" in self.wanted:
            write_png(self.out / f"{name}_mosaic.png", mosaic([res.input, res.color, res.overlay]))
        self.written += 1

    def open_video(self, name: str, fps: float) -> None:
        from .media import VideoWriter

        writers = {}
        for kind in ("overlay", "mosaic", "color"):
            if kind in self.wanted:
                writers[kind] = VideoWriter(self.out / f"{name}_{kind}.mp4", fps)
        if self.video_labels:
            (self.out / f"{name}_labels").mkdir(exist_ok=True)
        self.videos[name] = writers

    def video_frame(self, name: str, index: int, res) -> None:
        from .media import mosaic, write_png

        writers = self.videos[name]
        if "overlay" in writers:
            writers["overlay"].write(res.overlay)
        if "color" in writers:
            writers["color"].write(res.color)
        if "mosaic" in writers:
            writers["mosaic"].write(mosaic([res.input, res.color, res.overlay]))
        if self.video_labels:
            write_png(self.out / f"{name}_labels" / f"{index:06d}.png", res.labels)
        self.written += 1

    def close_video(self, name: str) -> None:
        for w in self.videos.pop(name, {}).values():
            w.close()


def _unique_names(paths: List[Path]) -> List[str]:
    names, seen = [], {}
    for p in paths:
        n = seen.get(p.stem, 0)
        seen[p.stem] = n + 1
        names.append(p.stem if n == 0 else f"{p.stem}_{n}")
    return names


def main(argv: Optional[List[str]] = None) -> int:
    args = get_args_parser().parse_args(argv)
    from tqdm import tqdm

    from ..paths import resolve_checkpoint, resolve_device
    from ..inference import EngineConfig, RealtimeEngine, Segmenter
    from .media import expand_inputs, read_image, read_video, video_info

    wanted = {w.strip() for w in args.outputs.split(",") if w.strip()}
    bad = wanted - set(CHOICES)
    if bad or not wanted:
        print(f"pspnet infer: --outputs must be a subset of {','.join(CHOICES)}, got {args.outputs!r}",
              file=sys.stderr)
        return 2
    try:
        inputs = expand_inputs(args.inputs, args.recursive)
        device = resolve_device(args.device)
        ckpt = resolve_checkpoint(args.checkpoint, args.dataset, device)
        seg = Segmenter.from_checkpoint(ckpt, device=device, precision=args.precision,
                                        inference_size=args.size, backend=args.backend,
                                        num_threads=args.threads)
    except (OSError, ValueError, RuntimeError) as exc:
        print(f"pspnet infer: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log.info("model %s (%s, %s, %s) on %s, inference size %s", seg.model_name, seg.backend,
             seg.precision, ",".join(seg.classes), seg.device, seg.inference_size)

    engine_outputs = {"labels"}
    if wanted & {"color", "mosaic", "overlay"}:
        engine_outputs |= {"color", "overlay"}
    cfg = EngineConfig(drop_policy="queue", queue_size=2 * args.batch, max_batch=args.batch,
                       overlay_alpha=args.alpha, upsample=args.upsample,
                       outputs=frozenset(engine_outputs), drivable_classes=None)
    done: "queue.Queue" = queue.Queue()
    engine = RealtimeEngine(seg, cfg, on_result=lambda r: done.put(("ok", r)),
                            on_error=lambda e: done.put(("err", e)))
    writer = _Writer(out, wanted, args.video_labels)
    total = 0
    for path, kind in inputs:
        total += 1 if kind == "image" else (video_info(path)[0] or 0)
    bar = tqdm(total=total or None, unit="frame", disable=args.no_progress, file=sys.stderr)
    failures = 0

    def drain(block: bool = False) -> None:
        nonlocal failures
        while True:
            try:
                status, item = done.get(block=block, timeout=0.1 if block else None)
            except queue.Empty:
                return
            ctx = item.context
            if status == "err":
                failures += 1
                log.error("%s: %s", ctx["label"], item.message)
            elif ctx["video"] is None:
                writer.image(ctx["name"], item)
            else:
                writer.video_frame(ctx["video"], ctx["index"], item)
            if ctx.get("last"):
                writer.close_video(ctx["video"])
            bar.update(1)

    engine.start()
    try:
        for name, (path, kind) in zip(_unique_names([p for p, _ in inputs]), inputs):
            if kind == "image":
                try:
                    frame = read_image(path)
                except (OSError, ValueError) as exc:
                    failures += 1
                    log.error("%s: cannot read image: %s", path, exc)
                    continue
                engine.submit(frame, stamp=None, source_id="infer",
                              context={"label": str(path), "name": name, "video": None})
            else:
                fps = video_info(path)[1] or 10.0  # players need a rate; 10 Hz if the file has none
                writer.open_video(name, fps)
                index, prev = 0, None
                try:
                    for frame in read_video(path):
                        if prev is not None:
                            engine.submit(*prev)
                        prev = (frame, index, "infer", False,
                                {"label": f"{path}#{index}", "video": name, "index": index})
                        index += 1
                        drain()
                except Exception as exc:  # noqa: BLE001 - PyAV raises many types for bad files
                    failures += 1
                    log.error("%s: video decoding stopped at frame %d: %s", path, index, exc)
                if prev is None:
                    writer.close_video(name)
                else:
                    prev[4]["last"] = True
                    engine.submit(*prev)
            drain()
        engine.flush()
        drain()
    finally:
        engine.stop()
        for name in list(writer.videos):
            writer.close_video(name)
        bar.close()
    log.info("wrote %d frame(s) to %s%s", writer.written, out,
             f", {failures} failure(s)" if failures else "")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
