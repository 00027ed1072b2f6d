"""The studies: each module is one question asked of the grid engine (`node.experiments.grid`)
and its report — the paper's grid and report (`paper`, `report`), which algorithm wins where
(`heterogeneity`, `winners`), Byzantine robustness (`robustness`) and pre-validation on a user's
own file (`prevalidate`, with its answers in `answers`).

Rule 1: a study imports the grid engine through its door and never another room's internals;
nothing in the engine imports a study. Each study module is an entry point of its own
(scripts and tests import it by name).
Rule 2: like all of experiments, it drives `node.sim` and reads `outputs`; never daemons.
"""
