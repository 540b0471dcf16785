"""Ablation harness for BERT bi-encoders on best-counterargument retrieval (ArguAna Counterargs)."""

__version__ = "0.1.0"
