"""Start segmentation_node on one camera.

    ros2 launch pspnet_ros pspnet.launch.py image_topic:=/camera/image_raw \
        camera_info_topic:=/camera/camera_info
    ros2 launch pspnet_ros pspnet.launch.py params_file:=my.yaml namespace:=front checkpoint:=/models/kitti.pt

Arguments: params_file (default: the package's config/pspnet.yaml), extra_params_file (a second
parameters file applied over it, e.g. the ``bev.*`` file of ``pspnet make-bag --bev-params``), image_topic and
camera_info_topic (remaps of the node's relative ``image`` and ``camera_info``; with
``input_transport: compressed`` the node subscribes ``<image_topic>/compressed``), namespace
(outputs go to ``<namespace>/segmentation/...``), checkpoint (overrides the params file when
not empty), use_sim_time (true when replaying a bag with /clock), respawn (default true:
restart the node when it exits with code 3, its "device unusable" exit after a sticky CUDA
error or ``max_consecutive_failures`` failed frames, after 2 s, then 4, 8, 16, 30 s; after
max_respawns (default 5) restarts in a row it gives up with an error; a run of 60 s or more
starts the count afresh. Configuration errors, code 2, and clean exits are not restarted, so a
broken parameter file does not loop), max_respawns, lifecycle (default false:
true starts ``segmentation_lifecycle_node``, a managed node that starts unconfigured), autostart
(with lifecycle: configure, then activate once inactive, as a Nav2 lifecycle manager's
``autostart`` does; false leaves it to ``ros2 lifecycle set`` or your lifecycle manager).
"""

import os
import time

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, LogInfo, OpaqueFunction, RegisterEventHandler, TimerAction
from launch.event_handlers import OnProcessExit
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node

PACKAGE = "pspnet_ros"
EXIT_FATAL = 3  # pspnet_ros.ros.process.EXIT_FATAL (not imported: launch files stay import-light)
RESPAWN_DELAY_S = 2.0  # the first restart; each next one waits twice as long, up to RESPAWN_MAX_DELAY_S
RESPAWN_MAX_DELAY_S = 30.0
RESPAWN_STABLE_S = 60.0  # a run this long was a recovery: the next failure starts from RESPAWN_DELAY_S


class RespawnPolicy:
    """When to restart a node that exited with EXIT_FATAL: bounded, with exponential backoff."""

    def __init__(self, max_respawns, first_delay=RESPAWN_DELAY_S, max_delay=RESPAWN_MAX_DELAY_S,
                 stable_s=RESPAWN_STABLE_S):
        self.max_respawns = max_respawns
        self.first_delay, self.max_delay, self.stable_s = first_delay, max_delay, stable_s
        self.respawns = 0  # restarts since the last stable run

    def next_delay(self, ran_s):
        """Seconds to wait before the next start, or None to give up; ``ran_s``: the last run's length."""
        if ran_s >= self.stable_s:
            self.respawns = 0
        if self.respawns >= self.max_respawns:
            return None
        delay = min(self.first_delay * 2 ** self.respawns, self.max_delay)
        self.respawns += 1
        return delay


def _default_params_file():
    from ament_index_python.packages import get_package_share_directory

    return os.path.join(get_package_share_directory(PACKAGE), "config", "pspnet.yaml")


def _node(context):
    def arg(name):
        return LaunchConfiguration(name).perform(context)

    params_file = arg("params_file") or _default_params_file()
    extra = [arg("extra_params_file")] if arg("extra_params_file") else []
    overrides = {"use_sim_time": arg("use_sim_time").lower() in ("true", "1", "yes")}
    if arg("checkpoint"):
        overrides["checkpoint"] = arg("checkpoint")
    respawn = arg("respawn").lower() in ("true", "1", "yes")
    lifecycle = arg("lifecycle").lower() in ("true", "1", "yes")
    autostart = arg("autostart").lower() in ("true", "1", "yes")
    try:
        policy = RespawnPolicy(int(arg("max_respawns")))
    except ValueError:
        raise ValueError(f"max_respawns must be a whole number, got {arg('max_respawns')!r}") from None
    if policy.max_respawns < 0:
        raise ValueError(f"max_respawns must be >= 0, got {policy.max_respawns}")
    started = {"at": time.monotonic()}

    def make():
        common = {
            "package": PACKAGE,
            "name": "segmentation_node",
            "namespace": arg("namespace"),
            "parameters": [params_file, *extra, overrides],
            "remappings": [("image", arg("image_topic")), ("camera_info", arg("camera_info_topic"))],
            "output": "screen",
        }
        if lifecycle:
            node = LifecycleNode(executable="segmentation_lifecycle_node", **common)
            actions = [node] + (_autostart(node) if autostart else [])
        else:
            node = Node(executable="segmentation_node", **common)
            actions = [node]
        node.pspnet_respawnable = True  # what the one exit handler below matches
        return actions

    def start():
        started["at"] = time.monotonic()
        return make()

    if not respawn:
        return make()

    def on_exit(event, _context):
        if event.returncode != EXIT_FATAL:
            return None
        delay = policy.next_delay(time.monotonic() - started["at"])
        if delay is None:
            return [LogInfo(msg=f"[ERROR] segmentation_node exited with {EXIT_FATAL} (device unusable) "
                                f"{policy.max_respawns + 1} times in a row: not restarting it "
                                "(max_respawns; see its log for why)")]
        return [LogInfo(msg=f"segmentation_node exited with {EXIT_FATAL} (device unusable): restart "
                            f"{policy.respawns} of at most {policy.max_respawns} in {delay:g} s"),
                TimerAction(period=delay, actions=[OpaqueFunction(function=lambda _ctx: start())])]

    # One handler for every incarnation of the node (registered once, not per restart).
    handler = OnProcessExit(target_action=lambda action: getattr(action, "pspnet_respawnable", False),
                            on_exit=on_exit)
    return start() + [RegisterEventHandler(handler)]


def _autostart(node):
    """Configure now; activate when configure reaches inactive (not after a deactivate)."""
    from launch.actions import EmitEvent
    from launch.events import matches_action
    from launch_ros.event_handlers import OnStateTransition
    from launch_ros.events.lifecycle import ChangeState
    from lifecycle_msgs.msg import Transition

    def change(transition):
        return EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(node),
                                           transition_id=transition))

    return [change(Transition.TRANSITION_CONFIGURE),
            RegisterEventHandler(OnStateTransition(target_lifecycle_node=node, start_state="configuring",
                                                   goal_state="inactive",
                                                   entities=[change(Transition.TRANSITION_ACTIVATE)]))]


def generate_launch_description():
    return LaunchDescription([
        DeclareLaunchArgument("params_file", default_value="",
                              description="node parameters YAML (empty: the package's config/pspnet.yaml)"),
        DeclareLaunchArgument("extra_params_file", default_value="",
                              description="a second parameters YAML applied over params_file (e.g. the "
                                          "bev.* file of `pspnet make-bag --bev-params`)"),
        DeclareLaunchArgument("image_topic", default_value="image",
                              description="camera image topic (sensor_msgs/Image)"),
        DeclareLaunchArgument("camera_info_topic", default_value="camera_info",
                              description="camera_info topic matching image_topic"),
        DeclareLaunchArgument("namespace", default_value="",
                              description="node namespace (outputs: <namespace>/segmentation/...)"),
        DeclareLaunchArgument("checkpoint", default_value="",
                              description="model checkpoint .pt; empty: the params file's (default auto)"),
        DeclareLaunchArgument("use_sim_time", default_value="false",
                              description="use /clock (bag replay)"),
        DeclareLaunchArgument("respawn", default_value="true",
                              description="restart the node after a fatal device error (exit code 3)"),
        DeclareLaunchArgument("max_respawns", default_value="5",
                              description="with respawn: restarts in a row after exit code 3 before giving up "
                                          "(2 s backoff, doubling to 30 s; a 60 s run resets the count)"),
        DeclareLaunchArgument("lifecycle", default_value="false",
                              description="true: a managed (lifecycle) node that starts unconfigured"),
        DeclareLaunchArgument("autostart", default_value="true",
                              description="with lifecycle:=true, configure and activate at start"),
        OpaqueFunction(function=_node),
    ])
