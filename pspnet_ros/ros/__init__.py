"""ROS 2 layer: the only part of pspnet_ros that imports rclpy and message packages."""
