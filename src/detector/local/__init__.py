"""The SageMaker pipeline's steps run on one machine: ``detector pipeline --local``."""
