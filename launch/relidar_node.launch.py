"""The relidar segmenter node alone, on a live lidar (or anything publishing the input topic).

    ros2 launch launch/relidar_node.launch.py bundle:=/path/to/bundle input_topic:=/sensing/lidar/top/pointcloud

Parameters come from the package's config/model.yaml then config/params.yaml (override either with
model_file:=... / params_file:=...); ``bundle`` is given here. The Fast DDS profile with a large
shared-memory segment is used unless FASTDDS_DEFAULT_PROFILES_FILE is already set.
"""

from launch.actions import DeclareLaunchArgument, SetEnvironmentVariable
from launch.substitutions import EnvironmentVariable, LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from launch import LaunchDescription

PACKAGE = "relidar_ros"


def generate_launch_description() -> LaunchDescription:
    share = FindPackageShare(PACKAGE)
    return LaunchDescription([
        DeclareLaunchArgument("bundle", description="Model bundle folder written by `relidar export bundle`."),
        DeclareLaunchArgument("input_topic", default_value="/points_raw",
                              description="The lidar driver's sensor_msgs/PointCloud2 topic."),
        DeclareLaunchArgument("params_file", default_value=PathJoinSubstitution([share, "config", "params.yaml"]),
                              description="Node parameters (ranges, threshold, max_points)."),
        DeclareLaunchArgument("model_file", default_value=PathJoinSubstitution([share, "config", "model.yaml"]),
                              description="Model parameters (backend, device, classes)."),
        SetEnvironmentVariable(
            "FASTDDS_DEFAULT_PROFILES_FILE",
            EnvironmentVariable("FASTDDS_DEFAULT_PROFILES_FILE",
                                default_value=PathJoinSubstitution([share, "config", "fastdds_shm.xml"])),
        ),
        Node(
            package=PACKAGE,
            executable="segmenter",
            name="segmenter",
            output="screen",
            parameters=[LaunchConfiguration("model_file"), LaunchConfiguration("params_file"),
                        {"bundle": LaunchConfiguration("bundle")}],
            remappings=[("~/input/points", LaunchConfiguration("input_topic"))],
        ),
    ])
