"""NVML's view of the local NVIDIA GPUs, optional at run time.

NVML is read only for hosts whose libvirt URI points at this machine. With no
NVIDIA driver the scan notes "NVML not available" and goes on. A recorded
sample (JSON, written by :func:`record_sample`) can stand in for a live NVML:
tests use one recorded on a real H100, and ``LLMVIRT_NVML_SAMPLE`` points the
CLI at one for demos.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Protocol

from llmvirt.model.cluster import NvmlGpu

SAMPLE_ENV = "LLMVIRT_NVML_SAMPLE"


class NvmlSource(Protocol):
    """Something that returns the local GPUs as NVML sees them, or raises ``RuntimeError``."""

    def read(self) -> list[NvmlGpu]:
        """The GPUs NVML sees now."""
        ...


def _normalise_bus_id(bus_id: str) -> str:
    # NVML reports "00000000:41:00.0"; libvirt and llmvirt use "0000:41:00.0".
    dom, rest = bus_id.lower().split(":", 1)
    return f"{int(dom, 16):04x}:{rest}"


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


class LiveNvml:
    """Reads NVML through pynvml (the ``nvidia-ml-py`` distribution)."""

    def read(self) -> list[NvmlGpu]:
        """Query every GPU NVML sees; raises RuntimeError when NVML cannot start."""
        try:
            import pynvml
        except ImportError as exc:  # pragma: no cover - dependency is declared
            raise RuntimeError(f"pynvml not installed: {exc}") from None
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as exc:
            raise RuntimeError(str(exc)) from None
        try:
            return [self._one(pynvml, i) for i in range(pynvml.nvmlDeviceGetCount())]
        except pynvml.NVMLError as exc:
            raise RuntimeError(str(exc)) from None
        finally:
            pynvml.nvmlShutdown()

    @staticmethod
    def _one(pynvml: object, index: int) -> NvmlGpu:
        nv = pynvml  # typed loosely: pynvml ships no stubs
        h = nv.nvmlDeviceGetHandleByIndex(index)  # type: ignore[attr-defined]
        mem = nv.nvmlDeviceGetMemoryInfo(h)  # type: ignore[attr-defined]
        try:
            util: int | None = int(nv.nvmlDeviceGetUtilizationRates(h).gpu)  # type: ignore[attr-defined]
        except nv.NVMLError:  # type: ignore[attr-defined]
            util = None
        try:
            current, _pending = nv.nvmlDeviceGetMigMode(h)  # type: ignore[attr-defined]
            mig: str | None = "enabled" if current else "disabled"
        except nv.NVMLError:  # type: ignore[attr-defined]
            mig = None
        return NvmlGpu(
            pci=_normalise_bus_id(_text(nv.nvmlDeviceGetPciInfo(h).busId)),  # type: ignore[attr-defined]
            name=_text(nv.nvmlDeviceGetName(h)),  # type: ignore[attr-defined]
            uuid=_text(nv.nvmlDeviceGetUUID(h)),  # type: ignore[attr-defined]
            memory_used_mib=int(mem.used) // 2**20,
            memory_total_mib=int(mem.total) // 2**20,
            utilization_pct=util,
            mig_mode=mig,
        )


class SampleNvml:
    """Replays a recorded NVML sample (JSON list of GPUs)."""

    def __init__(self, path: Path) -> None:
        """Read the sample at ``path``."""
        self.path = path

    def read(self) -> list[NvmlGpu]:
        """The recorded GPUs."""
        try:
            data = json.loads(self.path.read_text())
            return [NvmlGpu(**g) for g in data["gpus"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise RuntimeError(f"cannot read NVML sample {self.path}: {exc}") from None


def default_source() -> NvmlSource:
    """The sample named by ``LLMVIRT_NVML_SAMPLE`` if set, else live NVML."""
    sample = os.environ.get(SAMPLE_ENV)
    return SampleNvml(Path(sample)) if sample else LiveNvml()


def record_sample(path: Path, source: NvmlSource | None = None, meta: dict[str, str] | None = None) -> int:
    """Write what NVML sees now to ``path`` as a replayable sample; returns the GPU count."""
    gpus = (source or LiveNvml()).read()
    path.write_text(json.dumps({"meta": meta or {}, "gpus": [asdict(g) for g in gpus]}, indent=2) + "\n")
    return len(gpus)


if __name__ == "__main__":  # python -m llmvirt.observe.nvml record PATH (on a GPU host)
    import sys

    if len(sys.argv) != 3 or sys.argv[1] != "record":
        sys.exit("usage: python -m llmvirt.observe.nvml record PATH")
    print(f"recorded {record_sample(Path(sys.argv[2]))} GPU(s) to {sys.argv[2]}")
