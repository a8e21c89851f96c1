"""The attention the loop hands a reducer: what attn-prune ranks by, computed beside a fused attention."""

from __future__ import annotations

import pytest
import torch
from timm.layers import Attention

from tomebench.patch.attention import attention as _attention


@pytest.mark.parametrize("cls_only", [True, False])
def test_received_attention_is_proportional(cls_only):
    """The scores attn-prune ranks by: softmax(q k^T * scale + log size), mean over heads (and queries)."""
    torch.manual_seed(0)
    b, n, heads, dim = 2, 7, 2, 8
    attn = Attention(dim, num_heads=heads, qkv_bias=True).eval()
    x = torch.randn(b, n, dim)
    size = torch.randint(1, 6, (b, n, 1)).float()
    size[:, 0] = 1
    with torch.no_grad():
        _, parts = _attention(attn, x, size, reducing=True)
        tokens = parts.tokens(size, 1, 0, cls_only, x, 1)
        got = tokens.cls_attention() if cls_only else tokens.mean_attention()
        if not cls_only:
            assert tokens.cls_attention is None
        q, k, _ = attn.qkv(x).reshape(b, n, 3, heads, dim // heads).permute(2, 0, 3, 1, 4)  # (B, H, N, D) each
        logits = q @ k.transpose(-2, -1) * (dim // heads) ** -0.5  # (B, H, N, N)
        plain = logits.softmax(dim=-1)
        weighted = (logits + size.log()[:, None, None, :, 0]).softmax(dim=-1)
        if cls_only:
            plain, weighted = plain[:, :, :1], weighted[:, :, :1]
        expected = weighted.mean(dim=(1, 2))  # (B, N)
    assert got.shape == (b, n)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    assert (got - plain.mean(dim=(1, 2))).abs().max() > 1e-3  # sizes really changed the scores
    torch.testing.assert_close(got.sum(dim=-1), torch.ones(b))
