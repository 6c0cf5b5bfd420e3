"""The bench layer: strategies side by side in the simulator's scenarios (names resolve in
:mod:`llmvirt.strategies.registry`, the same names ``rebalance --policy`` takes)."""
