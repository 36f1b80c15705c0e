"""Data layer: ABAW and generic readers, images, datasets, submissions.

Every reader returns a ``FaceTable`` (see ``table.py``) with explicit sentinels
for unlabelled tasks, so the rest of the library sees one form of data.
"""

from .abaw import read_image_list, read_lsd, read_mtl_annotations, read_per_video, read_task_file
from .dataset import FaceDataset, PackedImages, pack_images
from .discover import open_dataset
from .errors import CorruptImageError, DataError, MissingImagesError
from .folders import read_class_folders, read_csv_labels
from .images import decode_rgb, drop_missing, find_missing, read_rgb
from .submission import (
    read_mtl_predictions,
    read_per_video_folder,
    write_mtl_submission,
    write_per_video_predictions,
)
from .table import FaceTable

__all__ = [
    "CorruptImageError", "DataError", "FaceDataset", "FaceTable", "MissingImagesError",
    "PackedImages", "decode_rgb", "drop_missing", "find_missing", "open_dataset", "pack_images",
    "read_class_folders", "read_csv_labels", "read_image_list", "read_lsd",
    "read_mtl_annotations", "read_mtl_predictions", "read_per_video", "read_per_video_folder",
    "read_rgb", "read_task_file", "write_mtl_submission", "write_per_video_predictions",
]
