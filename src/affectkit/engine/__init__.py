"""Training engine: optimiser and lr schedule (``optim``), checkpoints and resume (``state``)."""
