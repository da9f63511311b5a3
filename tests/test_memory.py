"""Huge pages for torch's CPU allocator: asked for by ``import cnnzoo``, and numbers unchanged."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from cnnzoo.perf.memory import HugePages, system_policy

# Prints whether torch asks for huge pages, then a digest of a ResNet-18's logits at 224 px,
# whose activations (6 MiB and more) are the allocations that get huge pages.
_PROBE = """
import hashlib, os
{first}
import torch
from cnnzoo import create_model
from cnnzoo.perf.memory import torch_asks_for_huge_pages
torch.manual_seed(0)
model = create_model("resnet18").eval()
with torch.no_grad():
    out = model(torch.randn(2, 3, 224, 224))
print(torch_asks_for_huge_pages(), os.environ.get("THP_MEM_ALLOC_ENABLE"),
      hashlib.sha256(out.numpy().tobytes()).hexdigest())
"""


def _probe(first: str, **env: str) -> list[str]:
    clean = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    done = subprocess.run([sys.executable, "-c", _PROBE.format(first=first)], env={**clean, **env},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_importing_cnnzoo_first_asks_for_huge_pages_and_keeps_every_bit():
    on = _probe("import cnnzoo")
    off = _probe("import cnnzoo", THP_MEM_ALLOC_ENABLE="0")  # the user's word stands
    late = _probe("import torch; import cnnzoo")             # too late to ask: leave it alone
    assert on[:2] == ["True", "1"]
    assert off[:2] == ["False", "0"]
    assert late[:2] == ["False", "None"]
    assert on[2] == off[2] == late[2]


@pytest.mark.parametrize("text, policy", [("always [madvise] never\n", "madvise"),
                                          ("[always] madvise never\n", "always"),
                                          ("garbled\n", None)])
def test_the_kernel_policy_is_the_bracketed_word(tmp_path, text, policy):
    path = tmp_path / "enabled"
    path.write_text(text)
    assert system_policy(path) == policy
    assert system_policy(tmp_path / "missing") is None


def test_huge_pages_take_effect_where_the_kernel_lets_them():
    assert HugePages(torch=True, system="madvise").in_effect
    assert not HugePages(torch=False, system="madvise").in_effect
    assert HugePages(torch=False, system="always").in_effect
    assert not HugePages(torch=True, system="never").in_effect
    assert "on" in HugePages(torch=True, system="madvise").describe()
    assert HugePages(torch=True, system=None).describe() == "huge pages: not on this system"


# After a warm-up, make and fill a tensor of MiB megabytes ten times: the page faults it took,
# and whether the heap policy was set.
_HEAP_PROBE = """
import resource, sys
import cnnzoo, torch
from cnnzoo.perf.memory import heap_kept
n = int(sys.argv[1]) << 18
for _ in range(3):
    torch.empty(n).fill_(1.0)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    torch.empty(n).fill_(1.0)
print(heap_kept(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _heap_probe(mib: int = 12, **env: str) -> tuple[str, int]:
    clean = {k: v for k, v in os.environ.items() if k != "CNNZOO_KEEP_HEAP"}
    done = subprocess.run([sys.executable, "-c", _HEAP_PROBE, str(mib)], env={**clean, **env},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    kept, faults = done.stdout.split()
    return kept, int(faults)


# 12 MiB: a ResNet activation at batch 4; 77 MiB: MobileNetV2's 96x112x112 expansion at
# batch 16, over the 32 MiB above which glibc maps each block afresh by default.
@pytest.mark.parametrize("mib", [12, 77])
def test_importing_cnnzoo_keeps_the_heap_so_a_tensor_reuses_its_pages(mib):
    import platform
    kept, faults = _heap_probe(mib)
    if platform.libc_ver()[0] != "glibc":
        assert kept == "False"  # mallopt is glibc's: nothing set elsewhere
        return
    assert kept == "True"
    # 12 MiB in new 4 KiB pages is 3072 faults a tensor, in huge pages 6; reused memory
    # takes none. A few stray ones (the interpreter's own) are allowed.
    assert faults < 100, faults
    kept, faults = _heap_probe(mib, CNNZOO_KEEP_HEAP="0")
    assert kept == "False"  # the user's word stands
    if mib > 32:
        assert faults >= 10, faults  # glibc's own way: fresh pages for each of the ten


def test_keeping_the_heap_changes_no_bit():
    assert _probe("import cnnzoo")[2] == _probe("import cnnzoo", CNNZOO_KEEP_HEAP="0")[2]


def test_the_description_says_the_heap_is_kept():
    assert "heap kept" in HugePages(torch=True, system="madvise", heap=True).describe()
    assert "heap" not in HugePages(torch=True, system="madvise").describe()
