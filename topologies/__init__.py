"""Communication graphs for dpnorm: builders, validation, edge signs, mixing weights.

Pure: imports networkx and numpy only, nothing of ours. Nodes are the integers 0..n-1.
"""
