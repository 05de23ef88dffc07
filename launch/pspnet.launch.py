"""Start segmentation_node on one camera.

    ros2 launch pspnet_ros pspnet.launch.py image_topic:=/camera/image_raw \
        camera_info_topic:=/camera/camera_info
    ros2 launch pspnet_ros pspnet.launch.py params_file:=my.yaml namespace:=front checkpoint:=/models/kitti.pt

Arguments: params_file (default: the package's config/pspnet.yaml), image_topic and
camera_info_topic (remaps of the node's relative ``image`` and ``camera_info``; with
``input_transport: compressed`` the node subscribes ``<image_topic>/compressed``), namespace
(outputs go to ``<namespace>/segmentation/...``), checkpoint (overrides the params file when
not empty), use_sim_time (true when replaying a bag with /clock), respawn (default true:
restart the node when it exits with code 3, its "device unusable" exit after a sticky CUDA
error or ``max_consecutive_failures`` failed frames; configuration errors, code 2, and clean
exits are not restarted, so a broken parameter file does not loop).
"""

import os

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, LogInfo, OpaqueFunction, RegisterEventHandler, TimerAction
from launch.event_handlers import OnProcessExit
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

PACKAGE = "pspnet_ros"
EXIT_FATAL = 3  # pspnet_ros.ros.node.EXIT_FATAL (not imported: launch files stay import-light)
RESPAWN_DELAY_S = 2.0


def _default_params_file():
    from ament_index_python.packages import get_package_share_directory

    return os.path.join(get_package_share_directory(PACKAGE), "config", "pspnet.yaml")


def _node(context):
    def arg(name):
        return LaunchConfiguration(name).perform(context)

    params_file = arg("params_file") or _default_params_file()
    overrides = {"use_sim_time": arg("use_sim_time").lower() in ("true", "1", "yes")}
    if arg("checkpoint"):
        overrides["checkpoint"] = arg("checkpoint")
    respawn = arg("respawn").lower() in ("true", "1", "yes")

    def make():
        node = Node(
            package=PACKAGE,
            executable="segmentation_node",
            name="segmentation_node",
            namespace=arg("namespace"),
            parameters=[params_file, overrides],
            remappings=[("image", arg("image_topic")), ("camera_info", arg("camera_info_topic"))],
            output="screen",
        )
        if not respawn:
            return [node]

        def on_exit(event, _context):
            if event.returncode != EXIT_FATAL:
                return None
            return [LogInfo(msg=f"segmentation_node exited with {EXIT_FATAL} (device unusable): "
                                f"restarting in {RESPAWN_DELAY_S:g} s"),
                    TimerAction(period=RESPAWN_DELAY_S, actions=make())]

        return [node, RegisterEventHandler(OnProcessExit(target_action=node, on_exit=on_exit))]

    return make()


def generate_launch_description():
    return LaunchDescription([
        DeclareLaunchArgument("params_file", default_value="",
                              description="node parameters YAML (empty: the package's config/pspnet.yaml)"),
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
        OpaqueFunction(function=_node),
    ])
