"""Differential privacy for dpnorm: clipping, Gaussian noise, accounting, the spend ledger.

Pure maths with explicit generators: imports torch, numpy and dp-accounting, nothing of ours.
"""
