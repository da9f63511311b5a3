"""How torch's CPU allocator gets memory: transparent huge pages, and glibc's heap kept.

``import cnnzoo`` before torch asks for huge pages (see ``cnnzoo/__init__.py``). It only counts
if the kernel allows it too: ``/sys/kernel/mm/transparent_hugepage/enabled`` set to ``madvise``
(the request is an madvise) or ``always`` (every process gets huge pages anyway).

``import cnnzoo`` also sets glibc's heap thresholds (:func:`keep_heap`), so that tensors under
32 MiB reuse heap memory instead of new pages from the kernel on every call.
"""
from __future__ import annotations

import ctypes
import os
import platform
from dataclasses import dataclass
from pathlib import Path

import torch

_THP_SETTING = Path("/sys/kernel/mm/transparent_hugepage/enabled")
_THP_MIN_BYTES = 2 << 20  # torch madvises allocations from this size up


# glibc's own ceiling for its adaptive mmap threshold, and the trim threshold it pairs with it.
MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 64 << 20
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # <malloc.h>
_heap_kept = False


def keep_heap() -> bool:
    """Fix glibc's mmap threshold at 32 MiB and its trim threshold at 64 MiB; True if set.

    glibc adapts both by itself, raising the mmap threshold to the size of each mmapped block
    freed, up to these very values, but torch's requests defeat it: each eager forward makes
    activations of many sizes, and with huge pages asked for, each of 2 MiB or more is aligned
    to 2 MiB, so blocks kept being mapped fresh and trimmed away. A loop making and filling a
    tensor faulted in 500-800 new pages each time at 4-25 MiB; with the thresholds fixed, none,
    and batch-1 inference ran 1.3-1.6x faster (efficientnet_b0, densenet121, mobilenet_v2 on
    a 2-core EPYC). Blocks over 32 MiB are still mapped and returned, so a process keeps at
    most 64 MiB more than it uses. ``CNNZOO_KEEP_HEAP=0`` leaves glibc's defaults; not glibc
    (macOS, musl, Windows): nothing to do.
    """
    global _heap_kept
    if os.environ.get("CNNZOO_KEEP_HEAP", "1") == "0" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    _heap_kept = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and \
        bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _heap_kept


def heap_kept() -> bool:
    return _heap_kept


@dataclass(frozen=True)
class HugePages:
    torch: bool        # torch's allocator asks for huge pages (THP_MEM_ALLOC_ENABLE at its start)
    system: str | None  # the kernel's policy: "always", "madvise", "never"; None off Linux
    heap: bool = False  # glibc's heap thresholds fixed by keep_heap()

    @property
    def in_effect(self) -> bool:
        return self.system == "always" or (self.torch and self.system == "madvise")

    def describe(self) -> str:
        if self.system is None:
            return "huge pages: not on this system"
        asked = "asked by torch" if self.torch else "not asked by torch"
        heap = "; heap kept below 32 MiB" if self.heap else ""
        return (f"huge pages: {'on' if self.in_effect else 'off'} ({asked}, "
                f"kernel {self.system}){heap}")


def system_policy(path: Path = _THP_SETTING) -> str | None:
    """The bracketed word of the kernel's THP setting ("always [madvise] never" -> "madvise")."""
    try:
        text = path.read_text()
    except OSError:
        return None
    start, end = text.find("["), text.find("]")
    return text[start + 1:end] if 0 <= start < end else None


def torch_asks_for_huge_pages() -> bool:
    # With the flag on, torch aligns each allocation of 2 MiB or more to the page, so that it can
    # madvise it (c10/core/alloc_cpu.cpp); with it off, to 64 bytes. Three live ones all on page
    # boundaries by chance would be a 1-in-262144 event. They are never written: no memory used.
    probes = [torch.empty(_THP_MIN_BYTES // 4) for _ in range(3)]
    return all(p.data_ptr() % 4096 == 0 for p in probes)


def huge_pages() -> HugePages:
    return HugePages(torch=torch_asks_for_huge_pages(), system=system_policy(), heap=heap_kept())
