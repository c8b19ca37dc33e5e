"""relidar.export: ONNX and TensorRT export, parity checks, the model bundle writer."""
