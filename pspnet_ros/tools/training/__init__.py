"""Training and evaluation (ROS-free)."""
