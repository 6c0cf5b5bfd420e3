"""Shipped policies, as data only (safetensors and JSON): installed as ``llmvirt_policies``.

This file only makes the directory installable beside llmvirt; nothing here is imported as code.
"""
