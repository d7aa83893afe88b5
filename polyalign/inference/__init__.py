"""A trained model as a library: load, embed, score, search, export with a model card,
embeddings files and value sources. Imports ``polyalign.core`` and ``polyalign.files`` only."""
