"""Attention written by hand: scaled dot-product attention, multi-head attention, sinusoidal positions.

Shapes use B = batch, H = heads, Lq / Lk = query / key lengths, D = model width, Dh = D / H.
Masks follow PyTorch's boolean convention: ``True`` marks a position that may NOT be attended to,
so :class:`MultiHeadAttention` can be checked against :class:`torch.nn.MultiheadAttention`.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def scaled_dot_product_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(q k^T / sqrt(d)) v.

    q (..., Lq, d), k (..., Lk, d), v (..., Lk, dv); ``mask`` is boolean and broadcastable to
    (..., Lq, Lk), True = blocked. Returns the output (..., Lq, dv) and the weights (..., Lq, Lk).
    A query row whose keys are all blocked gets zero weights (instead of NaN).
    """
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (..., Lq, Lk)
    if mask is not None:
        scores = scores.masked_fill(mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)  # (..., Lq, Lk), rows sum to 1
    if mask is not None:
        weights = torch.nan_to_num(weights, nan=0.0)  # fully blocked rows: softmax(-inf...) = NaN -> 0
    return weights @ v, weights  # (..., Lq, dv), (..., Lq, Lk)


def causal_mask(length: int, device: torch.device | str | None = None) -> torch.Tensor:
    """(L, L) boolean mask, True above the diagonal: position i may only look at positions <= i."""
    return torch.triu(torch.ones(length, length, dtype=torch.bool, device=device), diagonal=1)


class MultiHeadAttention(nn.Module):
    """Multi-head attention with separate q/k/v projections (batch first).

    forward(query (B, Lq, D), key (B, Lk, D), value (B, Lk, D), attn_mask, key_padding_mask)
    -> (out (B, Lq, D), weights (B, H, Lq, Lk)). ``attn_mask`` is (Lq, Lk) or (B, Lq, Lk) and
    ``key_padding_mask`` (B, Lk), both boolean with True = blocked.
    """

    def __init__(self, d_model: int, num_heads: int, dropout: float = 0.0, bias: bool = True) -> None:
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by num_heads ({num_heads})")
        self.d_model, self.num_heads, self.head_dim = d_model, num_heads, d_model // num_heads
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        self.k_proj = nn.Linear(d_model, d_model, bias=bias)
        self.v_proj = nn.Linear(d_model, d_model, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape  # (B, L, D) -> (B, H, L, Dh)
        return x.view(b, n, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        key_padding_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        b, lq, _ = query.shape
        lk = key.shape[1]
        q = self._split(self.q_proj(query))  # (B, H, Lq, Dh)
        k = self._split(self.k_proj(key))  # (B, H, Lk, Dh)
        v = self._split(self.v_proj(value))  # (B, H, Lk, Dh)
        mask = None
        if attn_mask is not None:
            am = attn_mask.bool()
            mask = am.view(1, 1, lq, lk) if am.dim() == 2 else am.view(b, 1, lq, lk)  # broadcast over heads
        if key_padding_mask is not None:
            kpm = key_padding_mask.bool().view(b, 1, 1, lk)  # (B, 1, 1, Lk)
            mask = kpm if mask is None else (mask | kpm)
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)  # (B, H, Lq, Lk)
        if mask is not None:
            scores = scores.masked_fill(mask, float("-inf"))
        weights = torch.softmax(scores, dim=-1)  # (B, H, Lq, Lk)
        if mask is not None:
            weights = torch.nan_to_num(weights, nan=0.0)
        ctx = self.dropout(weights) @ v  # (B, H, Lq, Dh)
        ctx = ctx.transpose(1, 2).reshape(b, lq, self.d_model)  # (B, Lq, D): heads concatenated
        return self.out_proj(ctx), weights

    @torch.no_grad()
    def load_from_torch(self, mha: nn.MultiheadAttention) -> MultiHeadAttention:
        """Copy the weights of a ``torch.nn.MultiheadAttention`` (same D and H) into this module."""
        d = self.d_model
        w = mha.in_proj_weight  # (3D, D): rows [q; k; v]
        for i, proj in enumerate((self.q_proj, self.k_proj, self.v_proj)):
            proj.weight.copy_(w[i * d:(i + 1) * d])
            if proj.bias is not None and mha.in_proj_bias is not None:
                proj.bias.copy_(mha.in_proj_bias[i * d:(i + 1) * d])
        self.out_proj.weight.copy_(mha.out_proj.weight)
        if self.out_proj.bias is not None and mha.out_proj.bias is not None:
            self.out_proj.bias.copy_(mha.out_proj.bias)
        return self


def sinusoidal_positional_encoding(max_len: int, d_model: int) -> torch.Tensor:
    """(max_len, d_model) table: PE[p, 2i] = sin(p / 10000^(2i/d)), PE[p, 2i+1] = cos(same)."""
    pos = torch.arange(max_len, dtype=torch.float32).unsqueeze(1)  # (L, 1)
    inv_freq = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
    angles = pos * inv_freq  # (L, ceil(D/2))
    pe = torch.zeros(max_len, d_model)
    pe[:, 0::2] = torch.sin(angles)
    pe[:, 1::2] = torch.cos(angles[:, : d_model // 2])
    return pe


class PositionalEncoding(nn.Module):
    """Adds the sinusoidal table to token embeddings: x (B, L, D) -> x + PE[:L] (B, L, D)."""

    def __init__(self, d_model: int, max_len: int = 512) -> None:
        super().__init__()
        self.register_buffer("pe", sinusoidal_positional_encoding(max_len, d_model), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] > self.pe.shape[0]:
            raise ValueError(f"sequence length {x.shape[1]} exceeds the positional table ({self.pe.shape[0]})")
        return x + self.pe[: x.shape[1]].unsqueeze(0)  # (1, L, D) broadcast over the batch
