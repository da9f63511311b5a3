"""cnnzoo.memory: ``import cnnzoo`` changes nothing in the process; ``tune_memory()`` is the one
explicit call that asks torch for huge pages and keeps glibc's heap, and it changes no bit."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from cnnzoo.memory import HugePages, system_policy

GLIBC = platform.libc_ver()[0] == "glibc"

# Each probe runs in a fresh interpreter and prints one JSON line. The digest is of a ResNet-18's
# logits at 224 px, whose activations (6 MiB and more) are the allocations that get huge pages.
_DIGEST = """
def digest():
    import hashlib
    import torch
    torch.manual_seed(0)
    model = cnnzoo.create_model("resnet18").eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 224, 224))
    return hashlib.sha256(out.numpy().tobytes()).hexdigest()
"""

_PLAIN = """
import json, os, sys
before = dict(os.environ)
import cnnzoo
r = {"torch_on_import": "torch" in sys.modules, "env_after_import": dict(os.environ) == before}
""" + _DIGEST + """
r["digest"] = digest()
from cnnzoo.memory import heap_kept, torch_asks_for_huge_pages
r.update(env_after_use=dict(os.environ) == before, heap=heap_kept(),
         thp=torch_asks_for_huge_pages(), thp_env=os.environ.get("THP_MEM_ALLOC_ENABLE"))
print(json.dumps(r))
"""

_TUNED = """
import json, os, sys
{first}
import cnnzoo
from cnnzoo.memory import heap_kept, torch_asks_for_huge_pages, tune_memory
r = {{"torch_before": "torch" in sys.modules}}
req = tune_memory()
r.update(request=[req.huge_pages, req.before_torch, req.heap], heap=heap_kept(),
         thp_env=os.environ.get("THP_MEM_ALLOC_ENABLE"))
""" + _DIGEST.replace("{", "{{").replace("}", "}}") + """
r["digest"] = digest() if {with_digest} else None
r["thp"] = torch_asks_for_huge_pages()
print(json.dumps(r))
"""


def _start(code: str, **env: str) -> subprocess.Popen:
    clean = {k: v for k, v in os.environ.items()
             if k not in ("THP_MEM_ALLOC_ENABLE", "CNNZOO_TUNE_MEMORY")}
    return subprocess.Popen([sys.executable, "-c", code], env={**clean, **env},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _result(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])


def _run(code: str, **env: str) -> dict:
    return _result(_start(code, **env))


@pytest.fixture(scope="module")
def probes() -> dict[str, dict]:
    """The four interpreters, started together: most of their time is importing torch."""
    started = {
        "plain": _start(_PLAIN),
        "tuned": _start(_TUNED.format(first="", with_digest=True)),
        "off": _start(_TUNED.format(first="", with_digest=False), THP_MEM_ALLOC_ENABLE="0"),
        "late": _start(_TUNED.format(first="import torch", with_digest=False)),
    }
    try:
        return {name: _result(proc) for name, proc in started.items()}
    finally:
        for proc in started.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.fixture
def plain(probes) -> dict:
    return probes["plain"]


@pytest.fixture
def tuned(probes) -> dict:
    return probes["tuned"]


def test_importing_cnnzoo_changes_nothing_in_the_process(plain):
    assert plain["torch_on_import"] is False  # lazy: torch is not even imported
    assert plain["env_after_import"] is True
    # Nor does using it: no environment variable, no heap setting, no huge pages asked.
    assert plain["env_after_use"] is True
    assert plain["thp_env"] is None
    assert plain["heap"] is False
    assert plain["thp"] is False


def test_tune_memory_before_torch_asks_for_huge_pages_and_keeps_the_heap(tuned):
    assert tuned["torch_before"] is False
    huge_pages, before_torch, heap = tuned["request"]
    assert huge_pages is True and before_torch is True
    assert tuned["thp_env"] == "1"
    if GLIBC:  # mallopt and torch's THP switch: glibc Linux only
        assert heap is True and tuned["heap"] is True
        assert tuned["thp"] is True
    else:
        assert heap is False and tuned["heap"] is False


def test_tune_memory_changes_no_bit(plain, tuned):
    assert len(plain["digest"]) == 64
    assert tuned["digest"] == plain["digest"]


def test_the_users_word_on_huge_pages_stands(probes):
    off = probes["off"]
    huge_pages, before_torch, heap = off["request"]
    assert off["thp_env"] == "0"  # kept, not overwritten
    assert huge_pages is False and before_torch is True
    assert off["thp"] is False
    assert heap is GLIBC  # the heap setting is a separate choice


def test_after_torch_the_call_says_it_came_too_late_for_huge_pages(probes):
    late = probes["late"]
    assert late["torch_before"] is True
    huge_pages, before_torch, heap = late["request"]
    assert before_torch is False and huge_pages is True
    assert heap is GLIBC  # the heap setting takes effect at any time


def test_each_half_of_the_call_can_be_left_out():
    code = """
import json, os
from cnnzoo.memory import heap_kept, tune_memory
req = tune_memory(huge_pages=False, heap=False)
print(json.dumps([req.huge_pages, req.heap, heap_kept(), os.environ.get("THP_MEM_ALLOC_ENABLE")]))
"""
    assert _run(code) == [False, False, False, None]


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


def test_the_description_says_the_heap_is_kept():
    assert "heap kept" in HugePages(torch=True, system="madvise", heap=True).describe()
    assert "heap" not in HugePages(torch=True, system="madvise").describe()
