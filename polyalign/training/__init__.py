"""The trainer: the loop, one step, its saved state, checkpoints, distributed helpers, the run
directory. Imports ``polyalign.core`` only (never ``evaluation`` or ``inference``)."""
