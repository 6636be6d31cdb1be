"""Policy contract, registry and the policy families (no rclpy)."""
