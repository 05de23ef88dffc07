"""Parameter table: descriptors, validation rules, and config/pspnet.yaml documenting every key."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest
import yaml

import rclpy  # noqa: F401  (the ROS layer must run: a missing rclpy is an error, not a skip)

from pspnet_ros.ros import params as P  # noqa: E402

CONFIG = Path(__file__).resolve().parents[2] / "config" / "pspnet.yaml"


BEV = {"bev.enable", "bev.camera_to_ground", "bev.camera_height", "bev.camera_pitch", "bev.camera_roll",
       "bev.camera_x", "bev.camera_y", "bev.camera_yaw", "bev.use_tf", "bev.frame_id", "bev.resolution",
       "bev.forward_range", "bev.lateral_range", "bev.publish_image"}


def _flatten(tree, prefix=""):
    """Nested YAML mappings -> dotted ROS parameter names, as rcl reads a params file."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_every_parameter_has_a_descriptor_and_the_issue_list_is_complete():
    names = set(P.default_values())
    assert {f.name for f in fields(P.NodeParams)} == {P.field_name(n) for n in names}
    assert names == {"checkpoint", "device", "precision", "backend", "inference_threads", "inference_size",
                     "output_resolution",
                     "overlay_alpha", "drivable_classes", "publish_color", "publish_overlay",
                     "publish_drivable", "publish_confidence", "max_rate", "drop_policy",
                     "input_transport", "qos_reliability", "cameras", "compile", "cuda_graphs",
                     "max_batch", "diagnostics_period", "max_consecutive_failures"} | BEV
    for name in names:
        d = P.descriptor(name)
        assert d.description and d.name == name
        assert d.read_only == (name not in P.RUNTIME), name
    assert P.descriptor("overlay_alpha").floating_point_range[0].to_value == 1.0
    assert "latest" in P.descriptor("drop_policy").additional_constraints
    assert P.descriptor("max_batch").integer_range[0].to_value == 16


@pytest.mark.parametrize("name,bad", [("max_batch", 0), ("max_batch", 17), ("max_batch", 2.5),
                                      ("max_consecutive_failures", -1), ("max_batch", True)])
def test_integer_parameters_are_range_checked(name, bad):
    with pytest.raises(P.ParameterError, match=name):
        P.params_from_values({name: bad})
    assert P.params_from_values({"max_batch": 1, "max_consecutive_failures": 0}).max_batch == 1


def test_config_file_documents_every_parameter_with_its_default():
    text = CONFIG.read_text()
    values = _flatten(yaml.safe_load(text)["/**"]["ros__parameters"])
    assert values == P.default_values()
    lines = text.splitlines()
    for name in values:
        leaf = name.rsplit(".", 1)[-1]
        i = next(k for k, line in enumerate(lines) if line.strip().startswith(f"{leaf}:"))
        assert lines[i - 1].strip().startswith("#"), f"{name} has no comment above it"
    assert P.params_from_values(values) == P.NodeParams()


@pytest.mark.parametrize("name,value,fragment", [
    ("overlay_alpha", 1.2, "between 0.0 and 1.0"),
    ("max_rate", -1.0, "between 0.0 and 1000.0"),
    ("precision", "int4", "one of: auto, fp32, fp16, bf16, int8"),
        ("backend", "tensorrt", "one of: auto, torch, onnxruntime, openvino"),
        ("inference_threads", -1, "integer from 0 to 256"),
    ("device", "gpu", "cuda:N"),
    ("inference_size", [96], "[height, width]"),
    ("inference_size", [8, 8], "between 16 and 8192"),
    ("cameras", ["front", "9rear"], "not a valid ROS namespace"),
    ("cameras", ["a", "a/"], "more than once"),
    ("checkpoint", "  ", "empty"),
])
def test_invalid_values_name_the_parameter_and_the_rule(name, value, fragment):
    with pytest.raises(P.ParameterError) as info:
        P.params_from_values({name: value})
    assert name in str(info.value) and fragment in str(info.value)


def test_normalization():
    p = P.params_from_values({"inference_size": [188, 621], "cameras": ["front/", "/rear", ""],
                              "drivable_classes": ["", "road"]})
    assert p.inference_size == (188, 621)
    assert p.cameras == ("front", "/rear")
    assert p.drivable_classes == ("road",)
    # An empty YAML list arrives as "not set" (None): same as the default.
    assert P.params_from_values({"cameras": None, "drivable_classes": None}) == P.NodeParams()


def test_bev_parameters():
    import numpy as np

    from pspnet_ros import bev

    p = P.params_from_values({"bev.enable": True})
    grid, t = P.bev_setup(p)
    assert grid == bev.GridSpec() and (grid.width, grid.height) == (800, 400)  # the devkit's BEV
    np.testing.assert_allclose(t, bev.camera_to_ground_from_pose(1.65))
    given = bev.camera_to_ground_from_pose(1.2, 0.1).ravel().tolist()
    p = P.params_from_values({"bev.enable": True, "bev.camera_to_ground": given, "bev.frame_id": "odom",
                              "bev.forward_range": [0.5, 20.0], "bev.resolution": 0.1})
    grid, t = P.bev_setup(p)
    np.testing.assert_allclose(t.ravel(), given)
    assert (grid.frame_id, grid.origin, grid.width, grid.height) == ("odom", (0.5, -10.0), 195, 200)


@pytest.mark.parametrize("values,fragment", [
    ({"bev.camera_to_ground": [1.0, 2.0]}, "16 numbers"),
    ({"bev.camera_to_ground": [2.0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1]}, "not a rotation"),
    ({"bev.forward_range": [10.0, 5.0]}, "min < max"),
    ({"bev.enable": True, "bev.resolution": 0.001, "bev.forward_range": [0.0, 100.0]}, "cells"),
    ({"bev.camera_pitch": 2.0}, "between -1.5 and 1.5"),
    ({"bev.frame_id": " "}, "empty"),
])
def test_bad_bev_parameters_are_refused_with_the_reason(values, fragment):
    with pytest.raises(P.ParameterError, match=fragment):
        P.params_from_values(values)


def test_runtime_changes_are_validated_and_restricted():
    p = P.NodeParams()
    reason, q = P.check_runtime_change(p, "overlay_alpha", 0.25)
    assert reason is None and q.overlay_alpha == 0.25
    reason, q = P.check_runtime_change(p, "max_rate", 5000.0)
    assert "max_rate" in reason and q is p
    reason, _ = P.check_runtime_change(p, "checkpoint", "other.pt")
    assert "read-only" in reason
