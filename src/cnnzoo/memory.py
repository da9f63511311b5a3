"""How torch's CPU allocator gets memory: transparent huge pages, and glibc's heap kept.

Nothing here runs on import. :func:`tune_memory` is the one call, for a program that owns its
process: it changes the whole process, every library in it included, so a library must not
make it for its user. The ``cnnzoo`` command makes it for its own process
(``CNNZOO_TUNE_MEMORY=0`` leaves the defaults); ``bench/peers.py`` makes it so that every library measured shares it.

Huge pages count only if the kernel allows them too: ``/sys/kernel/mm/transparent_hugepage/
enabled`` set to ``madvise`` (torch's request is an madvise) or ``always``. torch reads its
switch when it first allocates, so the call takes effect for huge pages only before that
(:func:`huge_pages` says whether it did); the heap setting takes effect at any time.
"""
from __future__ import annotations

import ctypes
import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path

_THP_SETTING = Path("/sys/kernel/mm/transparent_hugepage/enabled")
_THP_MIN_BYTES = 2 << 20  # torch madvises allocations from this size up


# Free memory the heap keeps at its top before it hands any back: a batch-16 forward of the
# models here frees a few hundred MiB at its end, to be asked for again by the next call.
TRIM_THRESHOLD = 1 << 30
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # <malloc.h>
_heap_kept = False


def keep_heap() -> bool:
    """Serve every allocation from glibc's heap and keep 1 GiB of it free; True if set.

    By default glibc maps each block over its mmap threshold afresh and unmaps it when freed,
    and trims the heap's top once 128 KiB of it is free; it raises both thresholds by itself,
    but only up to 32 MiB, and torch's requests defeat even that: each eager forward makes
    activations of many sizes, and with huge pages asked for, each of 2 MiB or more is aligned
    to 2 MiB, so blocks kept being mapped fresh and trimmed away. A fresh block is faulted in
    on first touch, and a huge-page fault may first compact memory (the kernel's ``defrag``
    policy is ``madvise``, and torch madvises), so a 77 MiB activation cost 65-83 ms in a
    forward where the conv writing it ran in 14 ms alone. Here nothing is mapped
    (``M_MMAP_MAX`` 0) and the top is kept up to 1 GiB free (``M_TRIM_THRESHOLD``), so from
    the second call on a forward reuses the memory of the one before. Batch 16, 2 cores of an
    AVX-512 EPYC, each in a process of its own: eager resnet50 1010 -> 790-880 ms,
    mobilenet_v3_large 170 -> 145, mobilenet_v2 211-277 -> 190-198, and 2300-10000 page
    faults a step -> under 200; with 32 MiB and 64 MiB thresholds, as before, small blocks
    took no faults but those over 32 MiB did. Like the CUDA caching allocator, the process
    then holds the memory of its largest step: the peak (maxrss) did not move, but freed
    memory goes back to the kernel only when more than 1 GiB of it lies at the heap's top.
    Not glibc (macOS, musl, Windows): nothing to do.
    """
    global _heap_kept
    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    _heap_kept = bool(mallopt(_M_MMAP_MAX, 0)) and \
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
        heap = "; heap kept" if self.heap else ""
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


def tune_memory(huge_pages: bool = True, heap: bool = True) -> HugePagesRequest:
    """Ask torch for transparent huge pages and keep glibc's heap, for this whole process.

    Huge pages: ``THP_MEM_ALLOC_ENABLE=1`` in the environment (a value the user set is kept),
    read by torch at its first allocation, so call this before importing torch; child
    processes inherit it. Heap: :func:`keep_heap`. Measured together, batch 16 on 2 cores of an
    AVX-512 EPYC, each in a process of its own: eager resnet50 1010 -> 790-880 ms,
    mobilenet_v3_large 170 -> 145, mobilenet_v2 211-277 -> 190-198 ms.
    """
    asked = False
    if huge_pages:
        os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
        asked = os.environ["THP_MEM_ALLOC_ENABLE"] == "1"
    return HugePagesRequest(huge_pages=asked, before_torch="torch" not in sys.modules,
                            heap=keep_heap() if heap else False)


@dataclass(frozen=True)
class HugePagesRequest:
    huge_pages: bool    # THP_MEM_ALLOC_ENABLE is 1
    before_torch: bool  # asked before torch was imported, so torch will read it
    heap: bool          # glibc's heap thresholds set


def torch_asks_for_huge_pages() -> bool:
    # With the flag on, torch aligns each allocation of 2 MiB or more to the page, so that it can
    # madvise it (c10/core/alloc_cpu.cpp); with it off, to 64 bytes. Three live ones all on page
    # boundaries by chance would be a 1-in-262144 event. They are never written: no memory used.
    import torch

    probes = [torch.empty(_THP_MIN_BYTES // 4) for _ in range(3)]
    return all(p.data_ptr() % 4096 == 0 for p in probes)


def huge_pages() -> HugePages:
    return HugePages(torch=torch_asks_for_huge_pages(), system=system_policy(), heap=heap_kept())
