"""Data: COCO channels read and validated, detectron2 datasets and loaders, the sampler, synthetic data."""
