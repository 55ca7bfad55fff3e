"""Training: hyperparameters, the detectron2 config, checkpoints, the trainer, its launcher and stop handling."""
