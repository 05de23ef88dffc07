"""pspnet_ros: PSPNet semantic segmentation and drivable-area detection for ROS 2.

The library (models, data, training, inference, bags) is ROS-free; only ``pspnet_ros.ros``
imports rclpy.
"""

__version__ = "0.1.0"
