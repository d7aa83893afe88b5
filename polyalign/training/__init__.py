"""The trainer: the loop, one step, its saved state, checkpoints, distributed helpers, the run
directory. Imports ``polyalign.core`` and ``polyalign.files`` only (never ``evaluation`` or ``inference``)."""
