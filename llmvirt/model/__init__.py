"""The data model: what every other layer speaks (cluster, usage arithmetic). Imports nothing from llmvirt."""
