"""The data layer: the corpus reader, the 8 task pools, query slices, tokenising and batching, a run's data."""
