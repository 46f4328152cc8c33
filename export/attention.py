"""The encoder's self-attention in the form graph optimisers recognise, with the same parameters and result.

nn.MultiheadAttention(batch_first=True) transposes [N, L, D] to [L, N, D] and back around one packed
q/k/v projection, and splits heads through a chain of reshapes and transposes. Written instead as
three projections, heads as [N, H, L, D/H] and scaled_dot_product_attention, the exported graph is
the standard attention pattern: ONNX Runtime's fusions (onnxscript `optimize_for_ort`) turn it into
one Attention operator in the CPU int8 artifact, and the fp32 graph loses its transposes.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import skip_init


class SelfAttention(nn.Module):
    """Self-attention of an nn.MultiheadAttention(batch_first=True) on [N, L, D], with copies of its parameters
    (the packed q/k/v projection as three)."""

    def __init__(self, attention: nn.MultiheadAttention):
        super().__init__()
        self.heads = attention.num_heads
        self.out_proj = attention.out_proj
        weights, biases = attention.in_proj_weight.detach().chunk(3), attention.in_proj_bias.detach().chunk(3)
        self.query, self.key, self.value = (skip_init(nn.Linear, w.shape[1], w.shape[0], dtype=w.dtype) for w in weights)
        for linear, weight, bias in zip((self.query, self.key, self.value), weights, biases):
            linear.weight.data.copy_(weight)
            linear.bias.data.copy_(bias)

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, need_weights: bool = False,
                attn_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, None]:
        if key is not query or value is not query or (attn_mask is not None and attn_mask.dtype == torch.bool):
            raise ValueError("SelfAttention takes self-attention only (key and value are the query), with an additive mask")
        n, length, width = query.shape

        def heads(projection: nn.Linear) -> torch.Tensor:
            return projection(query).unflatten(-1, (self.heads, width // self.heads)).transpose(1, 2)

        out = F.scaled_dot_product_attention(heads(self.query), heads(self.key), heads(self.value), attn_mask=attn_mask)
        return self.out_proj(out.transpose(1, 2).reshape(n, length, width)), None


def _replaceable(module: nn.Module) -> bool:
    """A batch-first self-attention layer without the options SelfAttention does not have."""
    return (isinstance(module, nn.MultiheadAttention) and module.batch_first and module._qkv_same_embed_dim
            and module.in_proj_bias is not None and module.bias_k is None and not module.add_zero_attn
            and module.dropout == 0.0)


def with_standard_attention(encoder: nn.Module) -> nn.Module:
    """`encoder` (in place) with every replaceable nn.MultiheadAttention swapped for SelfAttention; only called
    with self-attention (query, key and value the same tensor), as the vision towers of open_clip do."""
    for parent in list(encoder.modules()):
        for name, child in list(parent.named_children()):
            if _replaceable(child):
                setattr(parent, name, SelfAttention(child))
    return encoder
