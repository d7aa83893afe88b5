"""Contracts and assembly: hooks, plugin manager, registry, recipe, the encoder/loss/dataset/
evaluator contracts, batches and the model. Imports nothing of polyalign outside ``core``
but the file readers of :mod:`polyalign.files`."""
