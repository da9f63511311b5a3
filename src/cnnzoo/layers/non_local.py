"""Non-local block (Wang, Girshick, Gupta, He 2018, 'Non-local Neural Networks', arXiv 1711.07971).

The embedded-Gaussian form (Eq. 3 with Eq. 6, Fig. 2): every position's response is a
softmax-weighted sum of the ``g`` embeddings of all positions, with weights from
``theta(x_i) . phi(x_j)``; then ``z = BN(W y) + x`` (Eq. 1 and 6).
"""
from __future__ import annotations

import torch
from torch import fx, nn
from torch.nn import functional as F

from .conv_norm_act import ConvNormAct
from .helpers import in_layout_of

# One call in an fx graph: it asks the input for its layout, which symbolic tracing cannot.
fx.wrap("in_layout_of")


class NonLocal(nn.Module):
    """2D non-local block; a freshly built one is the identity (its output BN starts at zero).

    ``rd_ratio=1/2``: the embeddings have half the input channels (Section 3.3). ``subsample``
    max-pools ``phi`` and ``g`` by 2 (Section 3.3, 'a subsampling trick'), a quarter of the pairwise
    cost. The dot product is scaled by ``inner ** -0.5`` as the authors' code does (not written in
    the paper). The convolutions have biases, as in the authors' code and timm.
    """

    def __init__(self, chs: int, rd_ratio: float = 1 / 2, rd_channels: int | None = None,
                 subsample: bool = True, use_scale: bool = True):
        super().__init__()
        inner = rd_channels or max(1, int(chs * rd_ratio))
        self.scale = inner ** -0.5 if use_scale else 1.0
        self.theta = nn.Conv2d(chs, inner, 1)
        self.phi = nn.Conv2d(chs, inner, 1)
        self.g = nn.Conv2d(chs, inner, 1)
        # ceil_mode keeps a 1x1 map 1x1, so the block works at any input size.
        self.pool = nn.MaxPool2d(2, ceil_mode=True) if subsample else nn.Identity()
        self.out = ConvNormAct(inner, chs, 1, bias=True, act_layer=None)
        self.init_weights()

    def init_weights(self) -> None:
        """Zero the output BN's scale (Section 4.1: 'the block starts as an identity mapping').

        Families re-run this after their generic initialisation, which sets every BN to ones.
        """
        nn.init.zeros_(self.out.bn.weight)
        nn.init.zeros_(self.out.bn.bias)
        # Zero conv biases, as timm's NonLocalAttn and the authors' code (ConstantFill 0) start.
        for conv in (self.theta, self.phi, self.g, self.out.conv):
            nn.init.zeros_(conv.bias)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """The (B, HW, H'W') pairwise weights ``f(x_i, x_j) / C(x)``; each row sums to 1."""
        t = self.theta(x).flatten(2).transpose(1, 2)
        p = self.pool(self.phi(x)).flatten(2)
        return F.softmax(torch.bmm(t, p) * self.scale, dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        g = self.pool(self.g(x)).flatten(2).transpose(1, 2)
        # The transposed product comes out NHWC as it stands: back to the caller's layout.
        y = in_layout_of(torch.bmm(self.attention(x), g).transpose(1, 2).reshape(b, -1, h, w), x)
        return x + self.out(y)
