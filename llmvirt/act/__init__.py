"""Acting on hosts: each planned :class:`~llmvirt.model.action.Action` through one runner per kind
(pre-condition, execute, post-condition), and the executor that locks, journals and reconciles."""
