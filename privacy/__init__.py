"""Differential privacy for dpnorm: clipping, Gaussian noise, accounting, the spend ledger and
the budget that holds both.

Pure maths with explicit generators: imports torch, numpy and dp-accounting, nothing of ours.
"""
