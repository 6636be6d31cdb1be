"""Action spaces, tokenizers, normalization, chunk buffers and safety limits (no rclpy)."""
