"""Package-wide exception types (ROS-free)."""


class InputError(ValueError):
    """A frame or message cannot be turned into an image: the message says exactly why."""
