"""Evaluation of runs: run the evaluators, write report tables and plots, compare runs, plot
training curves. Imports ``polyalign.core`` and ``polyalign.files`` only (never ``training`` or ``inference``)."""
