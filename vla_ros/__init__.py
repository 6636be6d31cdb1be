"""vla_ros: Vision-Language-Action policies as real-time ROS 2 nodes."""

__version__ = '0.1.0'
