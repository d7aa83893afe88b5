"""Readers and writers of files: bounded, checked readers of what a user hands polyalign (YAML, JSON,
``.npy``, manifests, weights) and writes that a crash never leaves half done."""
