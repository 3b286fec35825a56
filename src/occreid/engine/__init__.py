"""Training engine: run folders, checkpoints, distributed helpers, the training loop, extraction."""
