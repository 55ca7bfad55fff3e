"""Detectron2 object detection in your own SageMaker training and serving containers."""

__version__ = "0.1.0"
