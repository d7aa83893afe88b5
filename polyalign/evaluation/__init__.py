"""Evaluation of runs: run the evaluators, write report tables and plots, compare runs, plot
training curves. Imports ``polyalign.core`` only (never ``training`` or ``inference``)."""
