"""Dataset readers: nuScenes, SemanticKITTI, KITTI object frames, rosbag2 logs and the synthetic world behind one interface."""

from relidar.training.readers.base import DatasetError, Reader, detect_format, open_dataset

__all__ = ["DatasetError", "Reader", "detect_format", "open_dataset"]
