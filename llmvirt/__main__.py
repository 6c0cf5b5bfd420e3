"""``python -m llmvirt``."""

from llmvirt.cli import main

main()
