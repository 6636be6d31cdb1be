"""Robot backends behind the driver node: MuJoCo simulation, dry run, your SDK (no rclpy)."""
