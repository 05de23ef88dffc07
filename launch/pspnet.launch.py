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
error or ``max_consecutive_failures`` failed frames; configuration errors, code 2, and clean
exits are not restarted, so a broken parameter file does not loop), lifecycle (default false:
true starts ``segmentation_lifecycle_node``, a managed node that starts unconfigured), autostart
(with lifecycle: configure, then activate once inactive, as a Nav2 lifecycle manager's
``autostart`` does; false leaves it to ``ros2 lifecycle set`` or your lifecycle manager).
"""

import os

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, LogInfo, OpaqueFunction, RegisterEventHandler, TimerAction
from launch.event_handlers import OnProcessExit
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node

PACKAGE = "pspnet_ros"
EXIT_FATAL = 3  # pspnet_ros.ros.process.EXIT_FATAL (not imported: launch files stay import-light)
RESPAWN_DELAY_S = 2.0


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
        if not respawn:
            return actions

        def on_exit(event, _context):
            if event.returncode != EXIT_FATAL:
                return None
            return [LogInfo(msg=f"segmentation_node exited with {EXIT_FATAL} (device unusable): "
                                f"restarting in {RESPAWN_DELAY_S:g} s"),
                    TimerAction(period=RESPAWN_DELAY_S, actions=make())]

        return actions + [RegisterEventHandler(OnProcessExit(target_action=node, on_exit=on_exit))]

    return make()


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
        DeclareLaunchArgument("lifecycle", default_value="false",
                              description="true: a managed (lifecycle) node that starts unconfigured"),
        DeclareLaunchArgument("autostart", default_value="true",
                              description="with lifecycle:=true, configure and activate at start"),
        OpaqueFunction(function=_node),
    ])
