"""Evaluation: COCO metrics of a model on a channel, and the evaluation step's report."""
