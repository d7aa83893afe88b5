"""Contracts and assembly: hooks, plugin manager, registry, recipe, the encoder/loss/dataset/
evaluator contracts, batches and the model. Imports nothing of polyalign outside ``core``."""
