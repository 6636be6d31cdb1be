"""The ROS-free runtime: observation slots, inference scheduling, chunk buffering, commands."""
