"""relidar_ros: the ROS 2 segmenter node over the relidar core (PointCloud2 in, labelled PointCloud2 out)."""
