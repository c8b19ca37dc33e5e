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

"""rclpy PointCloud2 messages from relidar.core.pointcloud2 clouds (parsing lives in the core)."""

from __future__ import annotations

import array

from relidar.core.pointcloud2 import CloudData
from sensor_msgs.msg import PointCloud2, PointField
from std_msgs.msg import Header


def cloud_to_msg(cloud: CloudData, header: Header) -> PointCloud2:
    """Return a PointCloud2 holding ``cloud`` under ``header`` (so stamp and frame match)."""
    msg = PointCloud2()
    msg.header = header
    msg.height = cloud.height
    msg.width = cloud.width
    msg.fields = [PointField(name=f.name, offset=f.offset, datatype=f.datatype, count=f.count)
                  for f in cloud.fields]
    msg.is_bigendian = cloud.is_bigendian
    msg.point_step = cloud.point_step
    msg.row_step = cloud.row_step
    msg.is_dense = cloud.is_dense
    # array('B') is taken as is by the generated setter; bytes would be checked byte by byte.
    data = array.array('B')
    data.frombytes(cloud.data)
    msg.data = data
    return msg
