"""relidar: relational distillation of CLIP into a 3D sparse-conv lidar network, and its runtime."""

__version__ = "0.1.0"
