"""Demonstration datasets shared by the simulator, the bag reader and training (no rclpy)."""
