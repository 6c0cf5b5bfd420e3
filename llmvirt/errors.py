"""llmvirt's exception tree and the one place libvirt errors are translated.

::

    LlmvirtError                 exit 1 unless a subclass says otherwise
    ├── UsageError               exit 2: bad input (URI, name, config, size)
    ├── StoreError               exit 4: database missing, unwritable or corrupted
    └── HostError                a libvirt host could not be used
        ├── HostUnreachable      connection or authentication failed
        ├── DomainGone           a domain vanished while we looked at it
        ├── OperationFailed      libvirt refused or failed an operation
        └── HostTimeout          the host did not answer in time

Exit codes are documented in docs/operations.md; :data:`EXIT_PARTIAL` (3) is
used by ``scan`` when some hosts failed and the others were recorded.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import libvirt

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_PARTIAL = 3
EXIT_STORE = 4


class LlmvirtError(Exception):
    """Base of every error llmvirt reports to the user as one line."""

    exit_code: int = EXIT_ERROR


class UsageError(LlmvirtError):
    """The user gave input llmvirt cannot act on."""

    exit_code = EXIT_USAGE


class StoreError(LlmvirtError):
    """The database cannot be opened, written or read."""

    exit_code = EXIT_STORE


class HostError(LlmvirtError):
    """A libvirt host could not be used."""


class HostUnreachable(HostError):
    """Connecting or authenticating to a host failed."""


class DomainGone(HostError):
    """A domain disappeared between listing and inspection."""


class OperationFailed(HostError):
    """libvirt refused or failed an operation."""


class HostTimeout(HostError):
    """A host did not answer within the allowed time."""


_UNREACHABLE_CODES = (  # libvirt's names: resolved when libvirt is first used (light commands never import it)
    "VIR_ERR_NO_CONNECT", "VIR_ERR_AUTH_FAILED", "VIR_ERR_AUTH_CANCELLED", "VIR_ERR_AUTH_UNAVAILABLE",
    "VIR_ERR_SYSTEM_ERROR", "VIR_ERR_RPC", "VIR_ERR_INVALID_CONN", "VIR_ERR_NO_SUPPORT",
)
_GONE_CODES = ("VIR_ERR_NO_DOMAIN", "VIR_ERR_INVALID_DOMAIN")
_libvirt: Any = None


def quiet_libvirt() -> Any:
    """Import libvirt and stop it printing every error to stderr (llmvirt reports them itself); the module.
    :func:`translate_libvirt` calls it, so every connection opened inside one is quiet."""
    global _libvirt
    if _libvirt is None:
        import libvirt

        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
        _libvirt = libvirt
    return _libvirt


def libvirt_reason(exc: libvirt.libvirtError) -> str:
    """libvirt's own message for an error, on one line."""
    msg = exc.get_error_message() or str(exc)
    return " ".join(msg.split())


@contextmanager
def translate_libvirt(what: str, connecting: bool = False) -> Iterator[None]:
    """Turn a ``libvirtError`` raised inside the block into llmvirt's exception tree.

    ``what`` names the object (``host lab-1``, ``domain web1 on lab-1``) so
    the resulting one-line message says where it happened. ``connecting``
    marks errors as HostUnreachable whatever their code.
    """
    lv = quiet_libvirt()
    try:
        yield
    except lv.libvirtError as exc:
        code = exc.get_error_code()
        reason = f"{what}: {libvirt_reason(exc)}"
        if connecting or code in {getattr(lv, c) for c in _UNREACHABLE_CODES}:
            raise HostUnreachable(reason) from None
        if code in {getattr(lv, c) for c in _GONE_CODES}:
            raise DomainGone(reason) from None
        if code == lv.VIR_ERR_OPERATION_TIMEOUT:
            raise HostTimeout(reason) from None
        raise OperationFailed(reason) from None
