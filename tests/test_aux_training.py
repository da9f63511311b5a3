"""The engine and the Inception families agree on auxiliary heads (two helpers, one contract)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnzoo import create_model
from cnnzoo.engine.trainer import compute_loss


@pytest.mark.parametrize("name, size, weights", [("googlenet", 224, (0.3, 0.3)),
                                                 ("inception_v3", 299, (0.4,))])
def test_training_loss_adds_the_papers_aux_weights(name, size, weights):
    torch.manual_seed(0)
    model = create_model(name, aux_logits=True, num_classes=4).train()
    assert tuple(model.aux_loss_weights) == weights
    x, y = torch.randn(2, 3, size, size), torch.tensor([1, 3])
    out = model(x)
    ce = nn.CrossEntropyLoss()
    expected = ce(out.logits, y) + sum(w * ce(a, y) for w, a in zip(weights, out.aux_logits))
    loss = compute_loss(out, y, ce, model.aux_loss_weights)
    torch.testing.assert_close(loss, expected)
    loss.backward()
    # The aux heads are trained: their classifiers receive gradients.
    aux_grads = [p.grad for n, p in model.named_parameters() if "aux" in n and p.grad is not None]
    assert aux_grads and any(g.abs().sum() > 0 for g in aux_grads)
    model.eval()
    with torch.no_grad():
        assert model(x).shape == (2, 4)
