# Copyright 2026 relidar maintainers
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.

"""
Replay a rosbag2 into the segmenter node and show the labels in RViz.

    ros2 launch relidar_ros replay.launch.py bag:=/path/to/bag bundle:=/path/to/bundle \
        [input:=/lidar/points] [loop:=true] [fixed_frame:=lidar] [rviz:=true] \
        [rate:=1.0] [start_paused:=false] [clock:=true] [player:=auto]

The bag is played by `ros2 bag play` where the ros2bag package is installed, else by
`relidar replay` (player:=ros2 or player:=relidar picks one). With clock:=true the player
publishes the bag's time on /clock and the node and RViz run on it (use_sim_time), so stamps,
TF and latencies agree with the recording. start_paused:=true waits for a resume:
`ros2 service call /rosbag2_player/resume rosbag2_interfaces/srv/Resume` (ros2 bag) or
`ros2 param set /relidar_replay paused false` (relidar replay).
"""

import shutil

from ament_index_python.packages import get_package_share_directory, PackageNotFoundError
from launch import LaunchDescription
from launch.actions import (
    DeclareLaunchArgument,
    ExecuteProcess,
    IncludeLaunchDescription,
    OpaqueFunction,
)
from launch.conditions import IfCondition
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

PLAYERS = ('auto', 'ros2', 'relidar')


def _has_ros2_bag():
    if shutil.which('ros2') is None:
        return False
    try:
        get_package_share_directory('ros2bag')
    except PackageNotFoundError:
        return False
    return True


def _true(context, argument):
    return argument.perform(context).strip().lower() in ('true', '1', 'yes')


def _player(context):
    """Start the bag player the launch arguments ask for."""
    choice = LaunchConfiguration('player').perform(context)
    if choice not in PLAYERS:
        raise RuntimeError(f"player:={choice}: choose one of {', '.join(PLAYERS)}")
    if choice == 'auto':
        choice = 'ros2' if _has_ros2_bag() else 'relidar'
    bag = LaunchConfiguration('bag').perform(context)
    rate = LaunchConfiguration('rate').perform(context)
    if choice == 'ros2':
        cmd = ['ros2', 'bag', 'play', bag, '--rate', rate]
    else:
        relidar = shutil.which('relidar')
        if relidar is None:
            raise RuntimeError('neither `ros2 bag` nor `relidar` is on PATH: install '
                               'ros-$ROS_DISTRO-ros2bag, or activate the environment with relidar')
        cmd = [relidar, 'replay', bag, '--rate', rate]
    if _true(context, LaunchConfiguration('loop')):
        cmd.append('--loop')
    if _true(context, LaunchConfiguration('clock')):
        cmd.append('--clock')
    if _true(context, LaunchConfiguration('start_paused')):
        cmd.append('--start-paused')
    return [ExecuteProcess(cmd=cmd, name='player', output='screen')]


def generate_launch_description():
    share = FindPackageShare('relidar_ros')
    return LaunchDescription([
        DeclareLaunchArgument('bag', description='rosbag2 folder (sqlite3 or MCAP) to replay.'),
        DeclareLaunchArgument(
            'bundle', description='Model bundle folder written by `relidar export bundle`.'),
        DeclareLaunchArgument(
            'input', default_value='/lidar/points',
            description="The bag's sensor_msgs/PointCloud2 topic (relidar synth bags: "
                        '/lidar/points).'),
        DeclareLaunchArgument(
            'fixed_frame', default_value='lidar',
            description="RViz's fixed frame: the clouds' frame_id (relidar synth bags: lidar), "
                        'or a frame /tf_static links it to.'),
        DeclareLaunchArgument('rate', default_value='1.0',
                              description='Replay speed (a multiple of the recorded pace).'),
        DeclareLaunchArgument('loop', default_value='false',
                              description='Start the bag over at its end.'),
        DeclareLaunchArgument('clock', default_value='true',
                              description='Publish the bag time on /clock; node and RViz use it.'),
        DeclareLaunchArgument('start_paused', default_value='false',
                              description='Start the player paused (resume: see the file doc).'),
        DeclareLaunchArgument('rviz', default_value='true',
                              description='Start RViz with the shipped config.'),
        DeclareLaunchArgument('player', default_value='auto',
                              description='auto (ros2 bag where installed), ros2 or relidar.'),
        IncludeLaunchDescription(
            PythonLaunchDescriptionSource(
                PathJoinSubstitution([share, 'launch', 'segmenter.launch.py'])),
            launch_arguments={
                'bundle': LaunchConfiguration('bundle'),
                'input': LaunchConfiguration('input'),
                'use_sim_time': LaunchConfiguration('clock'),
            }.items(),
        ),
        OpaqueFunction(function=_player),
        Node(
            package='rviz2',
            executable='rviz2',
            name='rviz',
            arguments=['-d', PathJoinSubstitution([share, 'rviz', 'relidar.rviz']),
                       '--fixed-frame', LaunchConfiguration('fixed_frame')],
            parameters=[{'use_sim_time': LaunchConfiguration('clock')}],
            condition=IfCondition(LaunchConfiguration('rviz')),
        ),
    ])
