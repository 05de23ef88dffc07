"""Datasets, class metadata and paired transforms (ROS-free)."""

from .classes import CAMVID, DATASETS, IGNORE_INDEX, KITTI_ROAD, DatasetInfo, dataset_meta, get_dataset_info
from .datasets import CamVid, KittiRoad, SegmentationDataset, build_dataset

__all__ = ["CAMVID", "DATASETS", "IGNORE_INDEX", "KITTI_ROAD", "CamVid", "DatasetInfo", "KittiRoad",
           "SegmentationDataset", "build_dataset", "dataset_meta", "get_dataset_info"]
