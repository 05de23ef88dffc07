"""rosbag2 tools (ROS-free, built on ``rosbags``): make bags from images/videos, segment bags."""
