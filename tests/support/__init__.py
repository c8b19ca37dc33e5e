"""Fixtures and references the tests share (generated data, tiny models, bundles, ROS helpers)."""
