"""ROS 2 nodes and the message <-> array conversions they use."""
