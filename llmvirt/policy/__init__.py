"""Placement and rebalancing policies: constraints, features, the learned scorer and its checkpoints."""
