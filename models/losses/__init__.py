"""Similarity losses, one file each; `registry` names them for `train.loss`."""
