"""Node + rosbag2 replay (`relidar replay`) + RViz with the shipped config.

    ros2 launch launch/relidar_replay.launch.py bundle:=/path/to/bundle bag:=/path/to/bag \
        input_topic:=/points_raw rate:=1.0 rviz:=true
"""

import os

from launch.actions import DeclareLaunchArgument, ExecuteProcess, IncludeLaunchDescription
from launch.conditions import IfCondition
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from launch import LaunchDescription

PACKAGE = "relidar_ros"
HERE = os.path.dirname(os.path.abspath(__file__))


def generate_launch_description() -> LaunchDescription:
    share = FindPackageShare(PACKAGE)
    return LaunchDescription([
        DeclareLaunchArgument("bag", description="rosbag2 folder (sqlite3 or MCAP) to replay."),
        DeclareLaunchArgument("bundle", description="Model bundle folder written by `relidar export bundle`."),
        DeclareLaunchArgument("input_topic", default_value="/points_raw",
                              description="The bag's sensor_msgs/PointCloud2 topic."),
        DeclareLaunchArgument("rate", default_value="1.0", description="Replay speed (multiple of recorded)."),
        DeclareLaunchArgument("rviz", default_value="true", description="Start RViz with the shipped config."),
        IncludeLaunchDescription(
            PythonLaunchDescriptionSource(os.path.join(HERE, "relidar_node.launch.py")),
            launch_arguments={"bundle": LaunchConfiguration("bundle"),
                              "input_topic": LaunchConfiguration("input_topic")}.items(),
        ),
        ExecuteProcess(
            cmd=["relidar", "replay", LaunchConfiguration("bag"), "--rate", LaunchConfiguration("rate"), "--loop"],
            output="screen",
        ),
        Node(
            package="rviz2",
            executable="rviz2",
            name="rviz",
            arguments=["-d", PathJoinSubstitution([share, "rviz", "relidar.rviz"])],
            condition=IfCondition(LaunchConfiguration("rviz")),
        ),
    ])
