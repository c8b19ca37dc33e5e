"""A procedural driving world: scenes, a spinning lidar, cameras, a simulated vision-language teacher,
and writers to rosbag2 and SemanticKITTI layouts. Deterministic by seed, numpy only.

``lidar_sweep`` is the short way to a realistic labelled scan (an HDL-64E on the world's street)."""

from relidar.synthetic.world import lidar_sweep

__all__ = ["lidar_sweep"]
