"""Whether torch's CPU allocator backs large tensors with transparent huge pages.

``import cnnzoo`` before torch asks for it (see ``cnnzoo/__init__.py``). It only counts if the
kernel allows it too: ``/sys/kernel/mm/transparent_hugepage/enabled`` set to ``madvise`` (the
request is an madvise) or ``always`` (every process gets huge pages anyway).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

_THP_SETTING = Path("/sys/kernel/mm/transparent_hugepage/enabled")
_THP_MIN_BYTES = 2 << 20  # torch madvises allocations from this size up


@dataclass(frozen=True)
class HugePages:
    torch: bool        # torch's allocator asks for huge pages (THP_MEM_ALLOC_ENABLE at its start)
    system: str | None  # the kernel's policy: "always", "madvise", "never"; None off Linux

    @property
    def in_effect(self) -> bool:
        return self.system == "always" or (self.torch and self.system == "madvise")

    def describe(self) -> str:
        if self.system is None:
            return "huge pages: not on this system"
        asked = "asked by torch" if self.torch else "not asked by torch"
        return f"huge pages: {'on' if self.in_effect else 'off'} ({asked}, kernel {self.system})"


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
    return HugePages(torch=torch_asks_for_huge_pages(), system=system_policy())
