"""Training loop, COCO evaluation, checkpoints: everything that runs a model over data."""
