"""Evaluation: the ranking kernel and metrics, batched encoding, and one evaluator interface that the
trained model and the zero-shot encoder both implement."""
