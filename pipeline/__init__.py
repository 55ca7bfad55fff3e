"""The SageMaker Pipeline of the detector: definition builder, deploy Lambda handler and CLI.

Runs on a workstation or in CI, never in a container. ``python -m pipeline --help`` lists the commands.
Importing this package does not import the SageMaker SDK; :mod:`pipeline.definition` does, lazily.
"""
