"""Evidence: grids of simulated runs (methods × ε × denoising × regime × seed), loading their
results, reports and figures.

Rule 1: the only room that imports matplotlib. Rule 2: it drives `node.sim` and reads `outputs`;
it never starts daemons' event loops itself.
"""
