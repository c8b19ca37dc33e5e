"""rclpy PointCloud2 messages <-> relidar.core.pointcloud2 (the parsing itself lives in the core)."""

from __future__ import annotations

import array

from sensor_msgs.msg import PointCloud2, PointField
from std_msgs.msg import Header

from relidar.core.pointcloud2 import CloudData


def cloud_to_msg(cloud: CloudData, header: Header) -> PointCloud2:
    """A PointCloud2 message holding ``cloud`` under ``header`` (copied, so stamp and frame match)."""
    msg = PointCloud2()
    msg.header = header
    msg.height = cloud.height
    msg.width = cloud.width
    msg.fields = [PointField(name=f.name, offset=f.offset, datatype=f.datatype, count=f.count) for f in cloud.fields]
    msg.is_bigendian = cloud.is_bigendian
    msg.point_step = cloud.point_step
    msg.row_step = cloud.row_step
    msg.is_dense = cloud.is_dense
    # array('B') is taken as is by the generated setter; a bytes object would be checked byte by byte.
    data = array.array("B")
    data.frombytes(cloud.data)
    msg.data = data
    return msg


def num_points(msg: PointCloud2) -> int:
    """Point count claimed by the layout (before any check that the data holds that many)."""
    return int(msg.width) * int(msg.height)
