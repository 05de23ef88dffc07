"""Replay a bag into segmentation_node, optionally with RViz (no camera needed).

    ros2 launch pspnet_ros pspnet_replay.launch.py bag:=sample_bag
    ros2 launch pspnet_ros pspnet_replay.launch.py bag:=drive_bag rate:=0.5 rviz:=false

The bag plays with the package's ``replay`` tool (``ros2 bag play`` works the same way) with
``--clock`` and the node runs with use_sim_time, so latencies in /diagnostics are measured
against the bag's time. Arguments: bag (rosbag2 directory, required), image_topic and
camera_info_topic (the bag's topics; defaults match ``pspnet make-bag``), rate, loop,
params_file, checkpoint, rviz.
"""

import os

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription, OpaqueFunction
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

PACKAGE = "pspnet_ros"
HERE = os.path.dirname(os.path.abspath(__file__))


def _share(*parts):
    from ament_index_python.packages import get_package_share_directory

    return os.path.join(get_package_share_directory(PACKAGE), *parts)


def _actions(context):
    def arg(name):
        return LaunchConfiguration(name).perform(context)

    # Start publishing once the node spins: frames sent while it loads its model are lost
    # (keep-last-1 input), as they would be with a plain `ros2 bag play` started at once.
    replay_args = [arg("bag"), "--clock", "--rate", arg("rate"),
                   "--wait-for-node", "/segmentation_node", "--wait-timeout", "120"]
    if arg("loop").lower() in ("true", "1", "yes"):
        replay_args.append("--loop")
    actions = [
        Node(package=PACKAGE, executable="replay", name="replay", arguments=replay_args, output="screen"),
        IncludeLaunchDescription(
            PythonLaunchDescriptionSource(os.path.join(HERE, "pspnet.launch.py")),
            launch_arguments={
                "params_file": arg("params_file"),
                "image_topic": arg("image_topic"),
                "camera_info_topic": arg("camera_info_topic"),
                "checkpoint": arg("checkpoint"),
                "use_sim_time": "true",
            }.items()),
    ]
    if arg("rviz").lower() in ("true", "1", "yes"):
        actions.append(Node(package="rviz2", executable="rviz2", name="rviz2",
                            arguments=["-d", arg("rviz_config") or _share("config", "pspnet.rviz")],
                            parameters=[{"use_sim_time": True}], output="screen"))
    return actions


def generate_launch_description():
    return LaunchDescription([
        DeclareLaunchArgument("bag", description="rosbag2 directory to play (mcap or sqlite3)"),
        DeclareLaunchArgument("image_topic", default_value="/camera/image_raw",
                              description="image topic in the bag"),
        DeclareLaunchArgument("camera_info_topic", default_value="/camera/camera_info",
                              description="camera_info topic in the bag"),
        DeclareLaunchArgument("rate", default_value="1.0", description="playback speed factor"),
        DeclareLaunchArgument("loop", default_value="true", description="play the bag in a loop"),
        DeclareLaunchArgument("params_file", default_value="",
                              description="node parameters YAML (empty: config/pspnet.yaml)"),
        DeclareLaunchArgument("checkpoint", default_value="", description="model checkpoint override"),
        DeclareLaunchArgument("rviz", default_value="true", description="start RViz with config/pspnet.rviz"),
        DeclareLaunchArgument("rviz_config", default_value="", description="RViz config (empty: the package's)"),
        OpaqueFunction(function=_actions),
    ])
