"""Runtime core: what the vehicle runs (numpy + onnxruntime; no torch, no rclpy, nothing from the layers above)."""
