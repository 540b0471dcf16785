"""Training one run of one arm: the trainer, negative mining, diagnostics and the recorder interface."""
