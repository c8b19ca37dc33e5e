"""A procedural driving world: scenes, a spinning lidar, cameras, a simulated vision-language teacher,
and writers to rosbag2 and SemanticKITTI layouts. Deterministic by seed, numpy only."""
