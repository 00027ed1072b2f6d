"""The dpnorm node: config, models and data, the DP-Norm step and its baselines, the in-process
simulator, the asyncio runtime and the command line.
"""
