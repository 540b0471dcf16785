"""The study: Optuna tuning per arm, final seeds, the zero-shot reference, coordination of workers."""
