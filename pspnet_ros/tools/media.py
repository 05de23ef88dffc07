"""Image and video files for the CLIs: listing inputs, reading frames, writing H.264 MP4.

Video goes through PyAV (FFmpeg): OpenCV's writer only offers mp4v, which browsers and many
players do not play; libx264 in yuv420p plays everywhere.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import InputError

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".tif", ".tiff", ".webp")
VIDEO_EXTS = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg")


def kind_of(path: Path) -> Optional[str]:
    ext = path.suffix.lower()
    if ext in IMAGE_EXTS:
        return "image"
    if ext in VIDEO_EXTS:
        return "video"
    return None


def expand_inputs(inputs: Sequence[str], recursive: bool = False) -> List[Tuple[Path, str]]:
    """Files and folders -> sorted list of (path, 'image'|'video').

    Raises FileNotFoundError /ValueError with the offending path.
    """
    found: List[Tuple[Path, str]] = []
    for raw in inputs:
        p = Path(raw).expanduser()
        if p.is_dir():
            files = sorted(p.rglob("*") if recursive else p.iterdir())
            entries = [(f, kind_of(f)) for f in files if f.is_file() and kind_of(f)]
            if not entries:
                raise ValueError(f"{p}: no images or videos in this folder")
            found.extend(entries)  # type: ignore[arg-type]
        elif p.is_file():
            kind = kind_of(p)
            if kind is None:
                raise ValueError(f"{p}: not an image ({', '.join(IMAGE_EXTS)}) or video "
                                 f"({', '.join(VIDEO_EXTS)})")
            found.append((p, kind))
        else:
            raise FileNotFoundError(f"{p}: no such file or folder")
    return found


def read_image(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB."""
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def write_png(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(array).save(path, compress_level=1)


def _open_video(path: Path):
    import av

    try:
        container = av.open(str(path))
    except Exception as exc:  # noqa: BLE001 - PyAV raises many types for unreadable files
        raise InputError(f"cannot open video {path}: {exc}") from None
    if not container.streams.video:
        container.close()
        raise InputError(f"{path} has no video stream")
    return container


def video_info(path: Path) -> Tuple[Optional[int], Optional[float]]:
    """(frame count, frames per second); either is None when the file does not say."""
    with _open_video(path) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        return (stream.frames or None), (float(rate) if rate else None)


def read_video(path: Path) -> Iterator[np.ndarray]:
    """Yield (H, W, 3) uint8 RGB frames (the one video reader: CLIs and ``make-bag``)."""
    with _open_video(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            yield frame.to_ndarray(format="rgb24")


class VideoWriter:
    """The one H.264 MP4 writer (libx264, yuv420p).

    Odd frame sizes are padded by one edge pixel because 4:2:0 chroma needs even dimensions.
    """

    def __init__(self, path: Path, fps: float, crf: int = 20) -> None:
        import av

        self.path = Path(path)
        self._container = av.open(str(self.path), mode="w")
        self._fps = Fraction(fps).limit_denominator(1001)
        self._crf = crf
        self._stream = None

    def write(self, rgb: np.ndarray) -> None:
        import av

        h, w = rgb.shape[:2]
        ph, pw = h + (h % 2), w + (w % 2)
        if (ph, pw) != (h, w):
            rgb = np.pad(rgb, ((0, ph - h), (0, pw - w), (0, 0)), mode="edge")
        if self._stream is None:
            self._stream = self._container.add_stream("libx264", rate=self._fps)
            self._stream.width, self._stream.height = pw, ph
            self._stream.pix_fmt = "yuv420p"
            self._stream.options = {"crf": str(self._crf), "preset": "veryfast"}
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        for packet in self._stream.encode(frame):
            self._container.mux(packet)

    def close(self) -> None:
        if self._stream is not None:
            for packet in self._stream.encode():
                self._container.mux(packet)
        self._container.close()

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def mosaic(images: Sequence[np.ndarray]) -> np.ndarray:
    """Side by side (left to right) of same-height (H, W, 3) / (H, W) uint8 images."""
    rgb = [np.repeat(im[..., None], 3, axis=2) if im.ndim == 2 else im for im in images]
    return np.concatenate(rgb, axis=1)
