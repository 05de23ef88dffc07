"""`--distro`: bags whose metadata each ROS 2 distro reads.

Humble: version 5; Jazzy, Kilted: 9. Checked by reading metadata.yaml and the storage file back.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import yaml

from pspnet_ros.tools.bags import messages, storage
from pspnet_ros.tools.bags import make_bag, process

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "data" / "sample" / "kitti_road"
LATER_KEYS = ("custom_data", "ros_distro")  # added in metadata versions 6 and 8


def make(tmp_path: Path, name: str, *args: str) -> Path:
    out = tmp_path / name
    assert make_bag.main([str(SAMPLE), "--out", str(out), "--start-time", "1700000000", "--limit", "3",
                          "--no-progress", *args]) == 0
    return out


def metadata(bag: Path) -> dict:
    return yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]


def read_all(bag: Path):
    from rosbags.rosbag2 import Reader

    with Reader(bag) as reader:
        return [(c.topic, t) for c, t, _ in reader.messages()]


@pytest.mark.parametrize("distro,version,fmt", [("humble", 5, "sqlite3"), ("jazzy", 9, "mcap"),
                                                ("kilted", 9, "mcap")])
def test_make_bag_writes_the_distros_metadata_version(tmp_path, distro, version, fmt):
    bag = make(tmp_path, f"bag_{distro}", "--distro", distro)
    meta = metadata(bag)
    assert meta["version"] == version
    assert meta["storage_identifier"] == fmt  # Humble's default plugin is sqlite3
    assert meta["message_count"] == 6  # 3 images + 3 camera_info
    topics = {t["topic_metadata"]["name"]: t for t in meta["topics_with_message_count"]}
    assert set(topics) == {"/camera/image_raw", "/camera/camera_info"}
    qos = topics["/camera/image_raw"]["topic_metadata"]["offered_qos_profiles"]
    if version == 5:
        for key in LATER_KEYS:
            assert key not in meta
        assert "type_description_hash" not in topics["/camera/image_raw"]["topic_metadata"]
        assert isinstance(qos, str)  # Humble: the QoS list as a YAML string
        assert yaml.safe_load(qos)[0]["reliability"] == 1  # reliable, as a camera driver offers
        con = sqlite3.connect(bag / meta["relative_file_paths"][0])
        try:
            assert con.execute("SELECT schema_version FROM schema").fetchone()[0] == 3
            assert con.execute("SELECT metadata_version FROM metadata").fetchone()[0] == 5
        finally:
            con.close()
    else:
        assert meta["ros_distro"] == "rosbags"
        assert isinstance(qos, list)  # version 9
    assert len(read_all(bag)) == 6  # the converted bag is still a valid rosbag2


def test_humble_with_an_explicit_mcap_format(tmp_path):
    bag = make(tmp_path, "bag_mcap5", "--distro", "humble", "--format", "mcap")
    meta = metadata(bag)
    assert (meta["version"], meta["storage_identifier"]) == (5, "mcap")
    assert len(read_all(bag)) == 6


def test_pspnet_bag_for_humble(tmp_path, tiny_checkpoint):
    src = make(tmp_path, "src")  # default: jazzy, mcap
    assert metadata(src)["version"] == 9
    out = tmp_path / "seg_humble"
    process.process_bag(src, out, checkpoint=str(tiny_checkpoint), device="cpu", progress=False,
                        distro="humble")
    meta = metadata(out)
    assert (meta["version"], meta["storage_identifier"]) == (5, "sqlite3")
    assert "custom_data" not in meta
    topics = {t for t, _ in read_all(out)}
    assert "/camera/segmentation/labels" in topics


def test_unknown_distro_is_refused(tmp_path):
    with pytest.raises(messages.BagError, match="choose one of humble, jazzy, kilted"):
        storage.check_distro("foxy")
    with pytest.raises(SystemExit):
        make_bag.get_args_parser().parse_args([str(SAMPLE), "--out", str(tmp_path / "x"), "--distro", "rolling"])
