"""The node's model: load the checkpoint into a Segmenter and wrap it in a RealtimeEngine.

The node takes the factory as a parameter (``engine_factory``), the one test seam: tests and
fault injection pass their own. torch loads here, after the cheap checks, so a wrong
``checkpoint`` or ``device`` fails fast.
"""

from __future__ import annotations

from typing import Any, Callable, Tuple

from ..paths import ModelNotFoundError, resolve_checkpoint, resolve_device
from . import params as node_params
from .outputs import published_outputs, resolve_drivable
from .process import StartupError

# engine_factory(params, on_result, on_error) -> (segmenter, engine). The segmenter needs
# classes, palette, meta, model_name, device, inference_size; the engine start/submit/
# submit_encoded/update/stats/stop as in pspnet_ros.inference.
EngineFactory = Callable[[node_params.NodeParams, Callable[[Any], None], Callable[[Any], None]],
                         Tuple[Any, Any]]


def default_engine_factory(p: node_params.NodeParams, on_result: Callable[[Any], None],
                           on_error: Callable[[Any], None]) -> Tuple[Any, Any]:
    """Load the checkpoint into a Segmenter and wrap it in a RealtimeEngine."""
    from ..models import CheckpointError  # torch: imported once the node runs, not with the module

    try:
        device = resolve_device(p.device)
        path = resolve_checkpoint(p.checkpoint, dataset="kitti_road", device=device)
    except ModelNotFoundError as exc:
        raise StartupError(f"checkpoint 'auto': {exc}; train one (pspnet train) or set 'checkpoint' "
                           "to a .pt file") from None
    except (RuntimeError, ValueError) as exc:
        raise StartupError(f"parameter 'device': {exc}") from None

    if not path.is_file():  # say so before the slow torch import
        problem = "is not a regular file" if path.exists() else "file does not exist"
        raise StartupError(f"parameter 'checkpoint': {CheckpointError(path, problem)}")

    from ..inference import EngineConfig, RealtimeEngine, Segmenter

    try:
        seg = Segmenter.from_checkpoint(str(path), device=device, precision=p.precision,
                                        inference_size=p.inference_size, backend=p.backend,
                                        num_threads=p.inference_threads or None, max_batch=p.max_batch)
    except CheckpointError as exc:
        raise StartupError(f"parameter 'checkpoint': {exc}") from None
    except (ValueError, RuntimeError) as exc:
        raise StartupError(f"cannot load {path} on {device} (precision {p.precision}, backend {p.backend}): "
                           f"{exc}") from None
    drivable = resolve_drivable(p.drivable_classes, seg.classes, seg.meta) or None
    cfg = EngineConfig(drop_policy=p.drop_policy, output_resolution=p.output_resolution,
                       overlay_alpha=p.overlay_alpha, drivable_classes=drivable,
                       outputs=published_outputs(p),
                       compile=p.compile, cuda_graphs=p.cuda_graphs, max_batch=p.max_batch)
    return seg, RealtimeEngine(seg, cfg, on_result=on_result, on_error=on_error)
