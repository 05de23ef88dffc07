"""Invalid configuration: the node exits non-zero with one clear message, not a traceback."""

from __future__ import annotations

import time


import rclpy  # noqa: F401  (the ROS layer must run: a missing rclpy is an error, not a skip)

from ros_harness import NodeProcess, domain_id_for  # noqa: E402

CASES = {
    # name: (parameters, fragments the message must contain)
    "alpha_range": ({"overlay_alpha": 1.5}, ["overlay_alpha", "between 0.0 and 1.0"]),
    "alpha_type": ({"overlay_alpha": "opaque"}, ["overlay_alpha", "wrong type"]),
    "drop_policy": ({"drop_policy": "sometimes"}, ["drop_policy", "one of: latest, queue"]),
    "inference_size": ({"inference_size": [10]}, ["inference_size", "[height, width]"]),
    "cameras": ({"cameras": ["front", "front"]}, ["cameras", "front more than once"]),
    "device": ({"device": "tpu"}, ["device", "cuda:N"]),
    "missing_checkpoint": ({"checkpoint": "/nonexistent/kitti.pt"}, ["/nonexistent/kitti.pt", "does not exist"]),
    "garbage_checkpoint": ({"checkpoint": "{garbage}"}, ["{garbage}", "checkpoint"]),
    "drivable": ({"checkpoint": "{tiny}", "drivable_classes": ["sky"]}, ["drivable_classes", "sky", "road"]),
    "bev_transform": ({"bev": {"enable": True, "camera_to_ground": [1.0, 2.0]}},
                      ["bev.camera_to_ground", "16 numbers"]),
    "bev_cameras": ({"checkpoint": "{tiny}", "cameras": ["front", "rear"], "bev": {"enable": True}},
                    ["bev.enable supports one camera"]),
}


def test_invalid_parameters_exit_non_zero_with_a_clear_message(tmp_path, tiny_checkpoint):
    garbage = tmp_path / "not_a_model.pt"
    garbage.write_bytes(b"this is not a checkpoint" * 10)
    domain = domain_id_for(__name__)
    procs = {}
    for name, (params, _fragments) in CASES.items():
        params = {"checkpoint": str(tiny_checkpoint), "device": "cpu", **params}
        params = {k: (v.format(garbage=garbage, tiny=tiny_checkpoint) if isinstance(v, str) else v)
                  for k, v in params.items()}
        procs[name] = NodeProcess(tmp_path, domain, params, name=name)
    procs["bad_yaml"] = NodeProcess(tmp_path, domain, {}, name="bad_yaml",
                                    params_text="/**:\n  ros__parameters:\n    overlay_alpha: [1, 'a'\n")
    start = time.monotonic()
    failures = []
    for name, proc in procs.items():
        rc = proc.wait_exit(120)
        out = proc.output()
        fragments = CASES[name][1] if name in CASES else ["cannot start", "parse params file"]
        fragments = [f.format(garbage=garbage, tiny=tiny_checkpoint) for f in fragments]
        if rc == 0 or "Traceback" in out or not all(f in out for f in fragments):
            failures.append(f"--- {name}: exit {rc}, expected {fragments} in:\n{out}")
    print(f"{len(procs)} start-up failures checked in {time.monotonic() - start:.1f} s")
    assert not failures, "\n".join(failures)
