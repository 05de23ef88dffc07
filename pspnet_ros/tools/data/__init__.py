"""Datasets, class metadata and paired transforms (ROS-free)."""

from .classes import (CAMVID, DATASETS, FOLDER, IGNORE_INDEX, KITTI_ROAD, ClassesFileError, DatasetInfo,
                      dataset_meta, get_dataset_info, load_classes_yaml)
from .datasets import CamVid, FolderDataset, FolderDatasetError, KittiRoad, SegmentationDataset, build_dataset

__all__ = ["CAMVID", "DATASETS", "FOLDER", "IGNORE_INDEX", "KITTI_ROAD", "CamVid", "ClassesFileError",
           "DatasetInfo", "FolderDataset", "FolderDatasetError", "KittiRoad", "SegmentationDataset",
           "build_dataset", "dataset_meta", "get_dataset_info", "load_classes_yaml"]
