"""The bench layer: strategies side by side in the simulator's scenarios (names resolve in
:mod:`llmvirt.strategies.registry`, the same names ``rebalance --policy`` takes).

The default policy lists live here, free of heavy imports, so ``llmvirt --help`` can show them.
"""

DEFAULT_BALANCE_POLICIES = ("none", "watcher-wb", "watcher-wb:70", "watcher-vwc", "proxlb", "proxlb:10:cpu")
DEFAULT_MEMORY_POLICIES = ("no-balloon", "mom", "proxmox", "llmvirt")
DEFAULT_PINNING_POLICIES = ("none", "nova", "llmvirt")
DEFAULT_CLOUDSIM_POLICIES = ("dvfs", "thr-mmt-0.8", "iqr-mmt-1.5", "mad-mmt-2.5", "lr-mmt-1.2", "llmvirt-head",
                             "llmvirt")
DEFAULT_FLEET_POLICIES = ("none", "tuned:watcher-wb", "tuned:proxlb", "tuned:proxmox-crs", "tuned:cp-sat",
                          "tuned:llmvirt-rl-fallback", "llmvirt-rl")
DEFAULT_SCAN_POLICIES = ("baseline:cp-sat:2:0.1:0.95", "scan-heuristic", "llmvirt")
"""The scans scenario's rows: the balance default before, the tuned heuristic, the default now."""
DEFAULT_PLACEMENT_POLICIES = ("baseline:first-fit", "baseline:best-fit", "baseline:least-loaded", "tuned",
                              "default", "place-rl")
