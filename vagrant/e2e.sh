#!/usr/bin/env bash
# Run on kvm1 as root: the Vagrant lab's end-to-end check, then the project's own test suite.
set -euo pipefail
cd /opt/llmvirt
.venv/bin/python vagrant/e2e.py
make test
