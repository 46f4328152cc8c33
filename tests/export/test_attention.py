"""The encoder's attention in the exported form against torch's own nn.MultiheadAttention."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from semobridge_export.attention import SelfAttention, with_standard_attention


def test_self_attention_equals_multihead_attention():
    torch.manual_seed(0)
    reference = nn.MultiheadAttention(48, 4, batch_first=True).eval()
    x = torch.randn(3, 11, 48)
    mask = torch.randn(11, 11)
    with torch.no_grad():
        for attn_mask in (None, mask):
            expected = reference(x, x, x, need_weights=False, attn_mask=attn_mask)[0]
            actual, _ = SelfAttention(reference)(x, x, x, need_weights=False, attn_mask=attn_mask)
            torch.testing.assert_close(actual, expected, atol=2e-6, rtol=1e-5)


def test_self_attention_refuses_what_it_does_not_compute():
    attention = SelfAttention(nn.MultiheadAttention(8, 2, batch_first=True))
    x = torch.randn(1, 5, 8)
    with pytest.raises(ValueError, match="self-attention"):
        attention(x, torch.randn(1, 5, 8), x)
    with pytest.raises(ValueError, match="additive"):
        attention(x, x, x, attn_mask=torch.ones(5, 5, dtype=torch.bool))


def test_the_swap_keeps_the_encoder_output_and_skips_other_attention(tiny_backbone):
    encoder = copy.deepcopy(tiny_backbone.model.visual).eval()
    swapped = with_standard_attention(copy.deepcopy(encoder))
    assert any(isinstance(m, SelfAttention) for m in swapped.modules())
    assert not any(isinstance(m, nn.MultiheadAttention) for m in swapped.modules())
    x = torch.randn(2, 3, tiny_backbone.image_size, tiny_backbone.image_size)
    with torch.no_grad():
        torch.testing.assert_close(swapped(x), encoder(x), atol=1e-5, rtol=1e-5)
    sequence_first = nn.Sequential(nn.MultiheadAttention(8, 2))  # batch_first=False: left as it is
    assert isinstance(with_standard_attention(sequence_first)[0], nn.MultiheadAttention)
