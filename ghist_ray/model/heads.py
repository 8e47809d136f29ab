"""Per-cell heads on the cell embedding: type, neighbourhood composition and expression."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ghist_ray.model.neighbourhood import PatchLayout


def mlp(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(in_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_dim)
    )


class NeighbourhoodAttention(nn.Module):
    """Cross-attention of each cell over reference tokens and its neighbours' embeddings.

    The query is the cell's embedding joined with its predicted neighbourhood composition;
    keys and values are the (optional) reference-profile tokens plus the embeddings of the
    cells of the same patch within the radius (itself included). The published model
    attends over a sequence of length one, so its neighbourhood input cannot matter; here
    the sequence really holds the neighbours.
    """

    def __init__(self, emb_dim: int, n_types: int, n_heads: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.query = nn.Linear(emb_dim + n_types, emb_dim)
        self.key = nn.Linear(emb_dim, emb_dim)
        self.value = nn.Linear(emb_dim, emb_dim)
        self.out = nn.Linear(emb_dim, emb_dim)

    def _heads(self, x: Tensor) -> Tensor:
        b, length, dim = x.shape
        return x.view(b, length, self.n_heads, dim // self.n_heads).transpose(1, 2)

    def forward(
        self,
        embedding: Tensor,
        composition: Tensor,
        layout: PatchLayout,
        mask: Tensor,
        reference_tokens: Tensor | None,
    ) -> Tensor:
        """(N, E), (N, C), layout, (B, K, K) neighbour mask, (R, E) or None -> (N, E)."""
        query = layout.pad(self.query(torch.cat([embedding, composition], 1)))
        tokens = layout.pad(embedding)
        if reference_tokens is not None:
            b, k = layout.valid.shape
            tokens = torch.cat([reference_tokens.expand(b, -1, -1).to(tokens.dtype), tokens], 1)
            mask = torch.cat([mask.new_ones((b, k, reference_tokens.shape[0])), mask], 2)
        attended = F.scaled_dot_product_attention(
            self._heads(query),
            self._heads(self.key(tokens)),
            self._heads(self.value(tokens)),
            attn_mask=mask[:, None],
        )
        merged = attended.transpose(1, 2).flatten(2)
        return self.out(layout.unpad(merged))


class ExpressionHead(nn.Module):
    """Whole-panel expression per cell, on the training scale (expr_scale · log1p counts).

    With a reference (R × G, non-negative, same scale as the targets) a softmax mixture over
    its rows gives a base estimate and its rows become attention tokens; without one the
    base is zero. A residual MLP on [embedding, neighbourhood context] is added and a
    softplus keeps the output non-negative without ReLU's dead genes.
    """

    def __init__(
        self,
        emb_dim: int,
        n_types: int,
        n_genes: int,
        n_heads: int,
        reference: Tensor | None = None,
    ) -> None:
        super().__init__()
        self.register_buffer("reference", reference)
        self.mixture = None if reference is None else mlp(emb_dim, emb_dim, reference.shape[0])
        self.reference_token = (
            None
            if reference is None
            else nn.Sequential(nn.LayerNorm(n_genes), nn.Linear(n_genes, emb_dim))
        )
        self.context = NeighbourhoodAttention(emb_dim, n_types, n_heads)
        self.residual = mlp(2 * emb_dim, emb_dim, n_genes)

    def forward(
        self, embedding: Tensor, composition: Tensor, layout: PatchLayout, mask: Tensor
    ) -> Tensor:
        tokens = None
        base = embedding.new_zeros(())
        if self.reference is not None:
            weights = torch.softmax(self.mixture(embedding), -1)
            base = weights @ self.reference.to(weights.dtype)
            tokens = self.reference_token(self.reference)
        context = self.context(embedding, composition, layout, mask, tokens)
        return F.softplus(base + self.residual(torch.cat([embedding, context], 1)))
