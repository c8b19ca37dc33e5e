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
Launch the relidar segmenter node on a live lidar (or anything publishing the input topic).

    ros2 launch relidar_ros segmenter.launch.py bundle:=/path/to/bundle \
        input:=/sensing/lidar/top/pointcloud

Parameters come from the package's config/model.yaml, then config/params.yaml (give your own
with model_file:=... / params_file:=...); the bundle is the launch argument. The Fast DDS profile
with a large shared-memory segment is used unless FASTDDS_DEFAULT_PROFILES_FILE is already set.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, SetEnvironmentVariable
from launch.substitutions import EnvironmentVariable, LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare


def generate_launch_description():
    share = FindPackageShare('relidar_ros')
    return LaunchDescription([
        DeclareLaunchArgument(
            'bundle', description='Model bundle folder written by `relidar export bundle`.'),
        DeclareLaunchArgument(
            'input', default_value='/points_raw',
            description="The lidar driver's sensor_msgs/PointCloud2 topic."),
        DeclareLaunchArgument(
            'model_file', default_value=PathJoinSubstitution([share, 'config', 'model.yaml']),
            description='Model parameters (backend, device, classes).'),
        DeclareLaunchArgument(
            'params_file', default_value=PathJoinSubstitution([share, 'config', 'params.yaml']),
            description='Node parameters (ranges, score threshold, intensity scale, max points).'),
        DeclareLaunchArgument(
            'use_sim_time', default_value='false',
            description='Take time from /clock (a bag replayed with its clock).'),
        SetEnvironmentVariable(
            'FASTDDS_DEFAULT_PROFILES_FILE',
            EnvironmentVariable(
                'FASTDDS_DEFAULT_PROFILES_FILE',
                default_value=PathJoinSubstitution([share, 'config', 'fastdds_shm.xml']))),
        Node(
            package='relidar_ros',
            executable='segmenter',
            name='segmenter',
            output='screen',
            parameters=[
                LaunchConfiguration('model_file'),
                LaunchConfiguration('params_file'),
                {
                    # A string whatever it looks like (a folder named 2024 is not a number).
                    'bundle': ParameterValue(LaunchConfiguration('bundle'), value_type=str),
                    'use_sim_time': LaunchConfiguration('use_sim_time'),
                },
            ],
            remappings=[('~/input/points', LaunchConfiguration('input'))],
        ),
    ])
