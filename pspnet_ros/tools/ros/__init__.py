"""ROS tools (rclpy): bag replay, soak, the demo session and the process harness that starts a node."""
