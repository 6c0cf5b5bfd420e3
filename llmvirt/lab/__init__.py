"""The local lab: several real libvirt hosts with real QEMU guests on one machine."""
