"""What every family's weight initialisation ends with."""
from __future__ import annotations

from torch import nn


def restore_block_init(model: nn.Module) -> None:
    """Let blocks that must start in a given state re-initialise themselves.

    A family's generic pass (Kaiming convs, identity BN) would otherwise undo it: a non-local
    block must start as the identity (zeroed output BN), a deformable conv with zero offsets.
    Such blocks define ``init_weights()``; this calls it after the family's own pass.
    """
    for m in model.modules():
        if m is not model and hasattr(m, "init_weights") and callable(m.init_weights):
            m.init_weights()
