"""The robot path: ``colcon build`` the package, then drive it only through the ``ros2`` CLI.

The commands are the README's "On a robot" section. Frames come from a bag made with the
installed ``pspnet make-bag`` from the installed demo frames (KITTI road val, never trained on)
and played by the installed ``replay`` (reliable, like a camera driver and ``ros2 bag play``).
No test here skips: without colcon or the ros2 CLI the module fails and says how to get them.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from workspace_helpers import build_workspace, domain_for  # noqa: E402

pytestmark = pytest.mark.slow

NS = "/ws"
NODE = f"{NS}/segmentation_node"
LAUNCH = ("ros2 launch pspnet_ros pspnet.launch.py namespace:=/ws image_topic:=/camera/image_raw "
          "camera_info_topic:=/camera/camera_info")
READY = r"serving 1 camera\(s\)"
ECHO = "ros2 topic echo --once --no-daemon"
IMAGE = "sensor_msgs/msg/Image"
DIAG = f"{ECHO} /diagnostics diagnostic_msgs/msg/DiagnosticArray --field status"


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    try:
        workspace = build_workspace(tmp_path_factory.mktemp("colcon_ws"), domain_for(__name__))
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    yield workspace
    workspace.stop_all()
    workspace.sh("ros2 daemon stop", timeout=30)


@pytest.fixture(autouse=True)
def _reap_each_test(request):
    """Kill what the test started once it ends, passed or failed.

    A failed test's node and looping replay must not load the machine and the domain under the next test.
    """
    yield
    if "ws" in request.fixturenames:
        request.getfixturevalue("ws").stop_all()


@pytest.fixture(scope="module")
def bag(ws):
    res = ws.sh("ros2 run pspnet_ros pspnet make-bag "
                "$(ros2 pkg prefix pspnet_ros)/share/pspnet_ros/data/sample/kitti_road "
                "--out demo_bag --rate 5 --no-progress --bev-params demo_bev.yaml", timeout=120)
    assert res.returncode == 0, res.stdout
    assert (ws.root / "demo_bag" / "metadata.yaml").is_file(), res.stdout
    assert "camera_to_ground:" in (ws.root / "demo_bev.yaml").read_text()
    return ws.root / "demo_bag"


def test_the_installed_package_is_what_runs(ws):
    res = ws.sh("ros2 pkg executables pspnet_ros")
    assert res.returncode == 0, res.stdout
    exes = set(res.stdout.split())
    assert {"segmentation_node", "segmentation_lifecycle_node", "replay", "pspnet"} <= exes, res.stdout
    res = ws.sh('python -c "import pspnet_ros; print(pspnet_ros.__file__)"')
    assert str(ws.root / "install") in res.stdout, res.stdout
    share = ws.sh("ros2 pkg prefix --share pspnet_ros").stdout.strip()
    for rel in ("launch/pspnet.launch.py", "launch/pspnet_replay.launch.py", "config/pspnet.yaml",
                "models/registry.json", "package.xml"):
        assert (Path(share) / rel).is_file(), rel


def test_ros2_run_reports_a_bad_checkpoint_and_exits_2(ws):
    res = ws.sh("ros2 run pspnet_ros segmentation_node --ros-args -p checkpoint:=/nonexistent/model.pt",
                timeout=60)
    assert res.returncode == 2, res.stdout
    assert "/nonexistent/model.pt" in res.stdout and "does not exist" in res.stdout, res.stdout
    assert "Traceback" not in res.stdout, res.stdout


def test_launch_topics_params_service(ws, bag):
    launch = ws.start(LAUNCH + f" extra_params_file:={bag.parent / 'demo_bev.yaml'}", "launch")
    launch.wait_for_output(READY, timeout=180)
    ws.retry("ros2 node list --no-daemon", lambda r: NODE in r.stdout.split(), what="ros2 node list")
    replay = ws.start(f"ros2 run pspnet_ros replay {bag} --loop", "replay")

    # Outputs at the camera's rate: 5 Hz in, the light model keeps up on 2 cores.
    hz = ws.sh_for(f"ros2 topic hz {NS}/segmentation/labels --window 5", 25)
    rates = [float(r) for r in re.findall(r"average rate: ([0-9.]+)", hz)]
    assert rates, hz
    assert 2.5 <= rates[-1] <= 7.5, hz
    res = ws.sh(f"{ECHO} {NS}/segmentation/labels {IMAGE} --field encoding", timeout=60)
    assert res.returncode == 0 and "mono8" in res.stdout, res.stdout
    res = ws.sh(f"{ECHO} {NS}/segmentation/camera_info sensor_msgs/msg/CameraInfo --field width",
                timeout=60)
    assert res.returncode == 0 and re.search(r"^1242$", res.stdout, re.M), res.stdout
    # The drivable area on the ground (bev.* from make-bag's params file, via extra_params_file).
    res = ws.sh(f"{ECHO} {NS}/segmentation/drivable_grid nav_msgs/msg/OccupancyGrid --field info", timeout=60)
    assert res.returncode == 0 and "resolution: 0.05" in res.stdout and "width: 800" in res.stdout, res.stdout
    res = ws.sh(DIAG, timeout=60)
    assert res.returncode == 0, res.stdout
    for key in ("lost before the node (/s)", "camera rate (Hz, from stamps)", "lifecycle state"):
        assert key in res.stdout, res.stdout

    # A runtime parameter changes; a read-only one is refused with the reason; so is a bad value.
    res = ws.retry(f"ros2 param set --no-daemon {NODE} overlay_alpha 0.3",
                   lambda r: "Set parameter successful" in r.stdout, what="param set overlay_alpha")
    res = ws.sh(f"ros2 param get --no-daemon {NODE} overlay_alpha")
    assert "0.3" in res.stdout, res.stdout
    res = ws.sh(f"ros2 param set --no-daemon {NODE} device cpu")
    assert "Setting parameter failed" in res.stdout and "read-only" in res.stdout, res.stdout
    res = ws.sh(f"ros2 param set --no-daemon {NODE} overlay_alpha 2.0")
    assert "Setting parameter failed" in res.stdout, res.stdout

    # ~/enable pauses processing (the model stays loaded) and resumes it.
    res = ws.sh(f'ros2 service call {NODE}/enable std_srvs/srv/SetBool "{{data: false}}"', timeout=60)
    assert res.returncode == 0 and "success=True" in res.stdout and "paused" in res.stdout, res.stdout
    launch.wait_for_output(r"processing paused")
    res = ws.sh(f'ros2 service call {NODE}/enable std_srvs/srv/SetBool "{{data: true}}"', timeout=60)
    assert "success=True" in res.stdout and "resumed" in res.stdout, res.stdout

    assert replay.stop() == 0, replay.output()
    assert launch.stop() == 0, launch.output()
    out = launch.output()
    assert "Traceback" not in out, out
    assert "process has finished cleanly" in out, out


def start_lifecycle_node(ws, ns: str, ros_args: str, log_name: str):
    """``ros2 run`` the managed node in ``ns``; (process, node name) once it is unconfigured."""
    node = ws.start(f"ros2 run pspnet_ros segmentation_lifecycle_node --ros-args -r __ns:={ns} {ros_args}",
                    log_name)
    node.wait_for_output(r"managed node: unconfigured", timeout=120)
    target = f"{ns}/segmentation_node"
    ws.retry(f"ros2 lifecycle get --no-daemon {target}", lambda r: "unconfigured" in r.stdout,
             what=f"lifecycle get {target} (unconfigured)")
    return node, target


def test_lifecycle_through_the_cli(ws, bag):
    """ros2 run the managed node and walk it through its states with ros2 lifecycle."""
    node, target = start_lifecycle_node(ws, "/lc", "-r image:=/camera/image_raw -r camera_info:=/camera/camera_info",
                                        "lifecycle")
    res = ws.sh(f"ros2 lifecycle list --no-daemon {target}")
    assert "configure" in res.stdout, res.stdout
    # A read-only-in-the-plain-node parameter may change while unconfigured.
    res = ws.sh(f"ros2 param set --no-daemon {target} max_batch 2")
    assert "Set parameter successful" in res.stdout, res.stdout

    res = ws.sh(f"ros2 lifecycle set --no-daemon {target} configure", timeout=180)
    assert "Transitioning successful" in res.stdout, res.stdout + node.output()
    assert "inactive" in ws.sh(f"ros2 lifecycle get --no-daemon {target}").stdout
    res = ws.sh(f"ros2 param set --no-daemon {target} max_batch 3")
    assert "Setting parameter failed" in res.stdout and "unconfigured" in res.stdout, res.stdout
    diag = ws.sh(DIAG, timeout=60).stdout
    assert "inactive" in diag, diag

    res = ws.sh(f"ros2 lifecycle set --no-daemon {target} activate", timeout=60)
    assert "Transitioning successful" in res.stdout, res.stdout
    replay = ws.start(f"ros2 run pspnet_ros replay {bag} --loop", "lc_replay")
    res = ws.sh(f"{ECHO} /lc/segmentation/labels {IMAGE} --field encoding", timeout=90)
    assert "mono8" in res.stdout, res.stdout + node.output()

    res = ws.sh(f"ros2 lifecycle set --no-daemon {target} deactivate", timeout=60)
    assert "Transitioning successful" in res.stdout, res.stdout
    res = ws.sh(f"ros2 lifecycle set --no-daemon {target} cleanup", timeout=60)
    assert "Transitioning successful" in res.stdout, res.stdout
    assert "unconfigured" in ws.sh(f"ros2 lifecycle get --no-daemon {target}").stdout
    res = ws.sh(f"ros2 lifecycle set --no-daemon {target} shutdown", timeout=60)
    assert "Transitioning successful" in res.stdout, res.stdout
    assert replay.stop() == 0, replay.output()
    assert node.stop() == 0, node.output()
    assert "Traceback" not in node.output(), node.output()


def test_lifecycle_configure_error_returns_to_unconfigured(ws):
    node, target = start_lifecycle_node(ws, "/bad", "-p checkpoint:=/nonexistent/model.pt", "lifecycle_bad")
    res = ws.sh(f"ros2 lifecycle set --no-daemon {target} configure", timeout=60)
    assert "Transitioning successful" not in res.stdout, res.stdout
    assert "unconfigured" in ws.sh(f"ros2 lifecycle get --no-daemon {target}").stdout
    node.wait_for_output(r"configure failed, staying unconfigured: .*/nonexistent/model\.pt")
    # Fix the parameter and configure again: the node never had to restart.
    res = ws.sh(f"ros2 param set --no-daemon {target} checkpoint auto")
    assert "Set parameter successful" in res.stdout, res.stdout
    res = ws.sh(f"ros2 lifecycle set --no-daemon {target} configure", timeout=180)
    assert "Transitioning successful" in res.stdout, res.stdout + node.output()
    assert node.stop() == 0, node.output()


def test_lifecycle_launch_autostart(ws, bag):
    """launch_ros LifecycleNode with lifecycle:=true: configured and activated by the launch file."""
    launch = ws.start(LAUNCH.replace("/ws", "/auto") + " lifecycle:=true", "lifecycle_launch")
    launch.wait_for_output(r"active: /camera/image_raw", timeout=180)
    res = ws.retry("ros2 lifecycle get --no-daemon /auto/segmentation_node",
                   lambda r: "active" in r.stdout and "inactive" not in r.stdout, what="lifecycle get")
    replay = ws.start(f"ros2 run pspnet_ros replay {bag} --loop", "auto_replay")
    res = ws.sh(f"{ECHO} /auto/segmentation/labels {IMAGE} --field encoding", timeout=90)
    assert "mono8" in res.stdout, res.stdout + launch.output()
    assert replay.stop() == 0, replay.output()
    assert launch.stop() == 0, launch.output()


def test_replay_launch(ws, bag):
    launch = ws.start(f"ros2 launch pspnet_ros pspnet_replay.launch.py bag:={bag} rviz:=false", "replay_launch")
    launch.wait_for_output(READY, timeout=180)
    hz = ws.sh_for("ros2 topic hz /segmentation/labels --window 5", 25)
    rates = [float(r) for r in re.findall(r"average rate: ([0-9.]+)", hz)]
    assert rates and rates[-1] >= 2.0, hz + launch.output()
    assert launch.stop() == 0, launch.output()
    assert "Traceback" not in launch.output(), launch.output()
