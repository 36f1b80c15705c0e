"""Faces in photos and video frames: detection with landmarks (``mtcnn``), for
``affectkit analyze``."""
