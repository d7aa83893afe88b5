"""Sweeps: a recipe's grid (or an Optuna search) times seeds, as ordinary run directories under one
sweep directory with a manifest; run in parallel here, or on a cluster through submitit; resumable.

It orchestrates runs, so it sits above :mod:`polyalign.run`; ``training/`` and ``evaluation/`` do
not import it.
"""
