"""The lab's guest image: Debian's cloud kernel and a busybox initramfs, built once and cached.

The two .debs are fetched with ``apt-get download`` (the only download ``lab
up`` makes, and only on a cold cache), unpacked with ``dpkg-deb -x``, and the
initramfs is written by :func:`write_cpio` (newc format), so no ``cpio`` or
root-owned files are needed.
"""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from llmvirt.errors import LlmvirtError

KERNEL_META = "linux-image-cloud-amd64"
BUSYBOX = "busybox-static"
# The PCI transport and the balloon driver; their .modinfo decides what else loads first.
GUEST_MODULES = ("virtio_pci", "virtio_balloon")
IMAGE_FORMAT = 2  # bump when the initramfs contents change


class ImageError(LlmvirtError):
    """The guest image could not be built."""


@dataclass(frozen=True)
class GuestImage:
    """Paths of a built guest image."""

    kernel: Path  #: the vmlinuz
    initrd: Path  #: the gzip-compressed initramfs
    kernel_version: str  #: e.g. ``6.1.0-56-cloud-amd64``


def _run(args: list[str], cwd: Path | None = None) -> str:
    try:
        res = subprocess.run(args, cwd=cwd, check=True, capture_output=True, text=True)
    except FileNotFoundError:
        raise ImageError(f"{args[0]} not found: run the README's set-up command (make setup)") from None
    except subprocess.CalledProcessError as exc:
        raise ImageError(f"{' '.join(args)} failed: {exc.stderr.strip().splitlines()[-1:]}") from None
    return res.stdout


def _kernel_package() -> str:
    for line in _run(["apt-cache", "depends", KERNEL_META]).splitlines():
        line = line.strip()
        if line.startswith("Depends: linux-image-"):
            return line.split(":", 1)[1].strip()
    raise ImageError(f"cannot tell which kernel {KERNEL_META} depends on (apt-get update needed?)")


def _download(pkg: str, dest: Path) -> Path:
    found = sorted(dest.glob(f"{pkg}_*.deb"))
    if not found:
        _run(["apt-get", "download", pkg], cwd=dest)
        found = sorted(dest.glob(f"{pkg}_*.deb"))
    if not found:
        raise ImageError(f"apt-get download {pkg} produced no .deb")
    return found[-1]


def _module_depends(data: bytes) -> list[str]:
    """The ``depends=`` entry of a module's .modinfo (depmod is not needed, nor installed)."""
    at = data.find(b"\0depends=")
    if at < 0:
        return []
    raw = data[at + len(b"\0depends="): data.index(b"\0", at + 1)].decode()
    return [d for d in raw.split(",") if d]


def _module_order(moddir: Path, wanted: tuple[str, ...]) -> list[Path]:
    """Module files for ``wanted`` and their dependencies, dependencies first."""
    by_name = {p.name.split(".ko")[0].replace("-", "_"): p for p in moddir.rglob("*.ko*")}
    order: list[Path] = []

    def visit(name: str) -> None:
        if name not in by_name:
            raise ImageError(f"kernel {moddir.name} has no module {name}")
        path = by_name[name]
        for dep in _module_depends(_decompress_module(path)):
            visit(dep)
        if path not in order:
            order.append(path)

    for name in wanted:
        visit(name)
    return order


def _cpio_entry(name: str, mode: int, data: bytes, ino: int) -> bytes:
    nb = name.encode() + b"\0"
    fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(nb), 0]
    head = b"070701" + b"".join(f"{f:08x}".encode() for f in fields) + nb
    head += b"\0" * (-len(head) % 4)
    return head + data + b"\0" * (-len(data) % 4)


def write_cpio(entries: list[tuple[str, int, bytes]]) -> bytes:
    """An uncompressed newc cpio archive of ``(path, mode, data)``; mode includes the file type bits."""
    out = b"".join(_cpio_entry(n, m, d, i + 1) for i, (n, m, d) in enumerate(entries))
    return out + _cpio_entry("TRAILER!!!", 0, b"", 0)


def _decompress_module(path: Path) -> bytes:
    data = path.read_bytes()
    if path.suffix == ".xz":
        import lzma

        return lzma.decompress(data)
    if path.suffix == ".zst":
        raise ImageError("zstd-compressed modules are not supported")
    return data


def _initramfs(root: Path, kver: str, busybox: Path) -> bytes:
    moddir = root / "lib" / "modules" / kver
    order = _module_order(moddir, GUEST_MODULES)
    guest = files("llmvirt.lab").joinpath("guest")
    dirs = ["bin", "dev", "proc", "sys", "tmp", "etc", "lib", "lib/modules"]
    entries: list[tuple[str, int, bytes]] = [(d, 0o040755, b"") for d in dirs]
    entries.append(("bin/busybox", 0o100755, busybox.read_bytes()))
    entries.append(("init", 0o100755, guest.joinpath("init").read_bytes()))
    entries.append(("bin/loadgen", 0o100755, guest.joinpath("loadgen").read_bytes()))
    names = []
    for path in order:
        plain = path.name.removesuffix(".xz")
        entries.append((f"lib/modules/{plain}", 0o100644, _decompress_module(path)))
        names.append(plain)
    entries.append(("etc/modules-order", 0o100644, ("\n".join(names) + "\n").encode()))
    return gzip.compress(write_cpio(entries), compresslevel=6, mtime=0)


def build_image(cache: Path) -> GuestImage:
    """Return the cached guest image, building it (and downloading its .debs) if needed."""
    cache.mkdir(parents=True, exist_ok=True)
    manifest = cache / "image.json"
    if manifest.exists():
        meta = json.loads(manifest.read_text())
        img = GuestImage(Path(meta["kernel"]), Path(meta["initrd"]), meta["kernel_version"])
        if meta.get("format") == IMAGE_FORMAT and img.kernel.exists() and img.initrd.exists():
            return img
    debs = cache / "debs"
    debs.mkdir(exist_ok=True)
    kpkg = _kernel_package()
    kernel_deb, busybox_deb = _download(kpkg, debs), _download(BUSYBOX, debs)
    work = cache / "unpacked"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    _run(["dpkg-deb", "-x", str(kernel_deb), str(work)])
    _run(["dpkg-deb", "-x", str(busybox_deb), str(work)])
    kver = kpkg.removeprefix("linux-image-")
    kernel = cache / f"vmlinuz-{kver}"
    shutil.copyfile(work / "boot" / f"vmlinuz-{kver}", kernel)
    initrd = cache / "initrd.img"
    initrd.write_bytes(_initramfs(work, kver, work / "bin" / "busybox"))
    shutil.rmtree(work)
    kernel.chmod(0o644)
    initrd.chmod(0o644)
    manifest.write_text(json.dumps({"format": IMAGE_FORMAT, "kernel": str(kernel), "initrd": str(initrd),
                                    "kernel_version": kver}))
    return GuestImage(kernel, initrd, kver)
