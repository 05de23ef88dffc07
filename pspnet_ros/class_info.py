"""The one ``segmentation/class_info`` contract (std_msgs/String JSON), ROS-free.

Shared by the node and ``pspnet bag``.
"""

from __future__ import annotations

import json
from typing import Optional, Sequence


def class_info_json(meta: dict, *, model_name: str = "", palette=None,
                    drivable_classes: Sequence[str] = (), inference_size: Optional[Sequence[int]] = None) -> str:
    """Return the JSON published on ``segmentation/class_info``.

    It holds the model, dataset, class names, palette, ignore index, drivable classes and inference
    size.
    """
    palette = meta.get("palette", []) if palette is None else palette
    return json.dumps({
        "model": model_name,
        "dataset": meta.get("dataset"),
        "classes": list(meta.get("classes", [])),
        "palette": [[int(v) for v in c] for c in palette],
        "ignore_index": meta.get("ignore_index"),
        "drivable_classes": list(drivable_classes or meta.get("drivable_classes", [])),
        "inference_size": list(inference_size) if inference_size else None,
        "labels": "mono8 image: pixel value = index into classes",
    })
