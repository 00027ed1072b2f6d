"""Evidence: grids of simulated runs (methods × ε × denoising × regime × seed), loading their
results, reports and figures. The grid engine is `grid` (a sub-room, entered by its door); the
studies run on it are `studies` (the paper's grid and report, heterogeneity, robustness,
pre-validation), which the engine never imports.

Rule 1: the only room that imports matplotlib. Rule 2: it drives `node.sim` and reads `outputs`
(and `node.adversary` for the robustness study); it never starts daemons' event loops itself.
"""
