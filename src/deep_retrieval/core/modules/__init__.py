"""Torch modules (user encoder, structure network, softmax head); no I/O, no metrics."""
