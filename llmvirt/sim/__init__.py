"""Trace-driven simulation: trace loaders, the CloudSim-faithful scenario, and its baselines."""
