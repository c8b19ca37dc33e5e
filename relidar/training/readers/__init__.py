"""Dataset readers: nuScenes, SemanticKITTI, KITTI object frames and rosbag2 logs behind one interface."""

from relidar.training.readers.base import DatasetError, Reader, detect_format, open_dataset

__all__ = ["DatasetError", "Reader", "detect_format", "open_dataset"]
