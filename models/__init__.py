"""Bi-encoder arms, heads and losses for counterargument retrieval."""
