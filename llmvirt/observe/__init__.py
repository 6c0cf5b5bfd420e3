"""Observing hosts: libvirt XML, the inventory scan, NVML, and status documents read back."""
