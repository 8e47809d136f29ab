"""Multitask loss: every term is returned on its own (for logging) plus the weighted total.

Terms (all means, so weights are comparable across batch sizes):
- seg_foreground: BCE + soft Dice on the nucleus foreground logit.
- seg_distance: MSE of the regressed distance map against the normalised distance (no
  sigmoid: a saturated sigmoid stalls on the mostly-zero background).
- deep_supervision: BCE of the coarse foreground logits (only when the backbone has them).
- pixel_type: CE over background + C types; pixels of unknown-type cells are ignored.
- cell_type: CE per cell; cells labelled -1 are ignored. Optional per-type weights
  (`type_weights`, see `balanced_type_weights`) lift rare types: the paper selects
  models by macro-F1, where a type with 2 % of the cells counts as much as one with 50 %.
- neighbourhood: KL(target composition || predicted) per cell.
- expression: MSE on the expr_scale · log1p(count) scale. MSE on log counts is the
  published choice; it treats a miss of a lowly and a highly expressed gene alike.
- expression_type: CE of the expression classifier on true expression (trains it).
- consistency: KL between the classifier's type distribution on true expression (the
  teacher, detached) and on predicted expression; it trains the expression head (and the
  classifier) towards expression that reads as the right cell type. Unlike an argmax
  composition loss, it has a gradient, and it uses cells of unknown type too.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ghist_ray.model.batch import PatchBatch
from ghist_ray.model.config import LossWeights
from ghist_ray.model.network import GhistOutputs, PixelOutputs
from ghist_ray.model.targets import UNKNOWN, pixel_targets


def _known_mean(losses: Tensor, target: Tensor) -> Tensor:
    """Mean over entries whose label is known; 0 (still differentiable) when none are."""
    known = (target != UNKNOWN).to(losses.dtype)
    return (losses * known).sum() / known.sum().clamp_min(1.0)


def _cross_entropy(logits: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
    per_item = F.cross_entropy(logits.float(), target, ignore_index=UNKNOWN, reduction="none")
    if weight is not None:
        per_item = per_item * weight.to(per_item)[target.clamp_min(0)]
    return _known_mean(per_item, target)


def balanced_type_weights(counts: Tensor, power: float) -> Tensor:
    """Per-type CE weights ∝ frequency^-power (0: plain CE, 1: every type weighs the same
    in total), scaled so the average weight over the counted cells is 1 (the loss keeps
    its scale). A type with no cells gets the largest weight of the others.

    Example:
        >>> balanced_type_weights(torch.tensor([90.0, 10.0]), 0.5)
        tensor([0.8333, 2.5000])
    """
    counts = counts.double()
    seen = counts > 0
    if not bool(seen.any()):
        raise ValueError("balanced_type_weights: no cell of any type was counted")
    weights = torch.zeros_like(counts)
    weights[seen] = (counts[seen] / counts.sum()).pow(-power)
    weights[~seen] = weights[seen].max()
    weights = weights / ((weights * counts).sum() / counts.sum())
    return weights.float()


def _row_mean(per_row: Tensor) -> Tensor:
    """Mean over cells; 0 (still differentiable) for a batch without cells."""
    return per_row.sum() / max(len(per_row), 1)


def _kl(log_q: Tensor, p: Tensor) -> Tensor:
    """Mean over rows of KL(p || q)."""
    return _row_mean(F.kl_div(log_q, p, reduction="none").sum(-1))


def _dice(logits: Tensor, target: Tensor, eps: float = 1.0) -> Tensor:
    prob = torch.sigmoid(logits)
    return 1 - (2 * (prob * target).sum() + eps) / (prob.sum() + target.sum() + eps)


def segmentation_losses(
    pixels: PixelOutputs, foreground: Tensor, distance: Tensor
) -> dict[str, Tensor]:
    """The nuclei terms (seg_foreground, seg_distance, deep_supervision) against the
    targets of `pixel_targets`: all that annotated nuclei without cell labels train
    (`ghist_ray.nuclei.finetune`)."""
    fg_logit = pixels.foreground_logits.float()
    bce = F.binary_cross_entropy_with_logits
    terms = {
        "seg_foreground": bce(fg_logit, foreground) + _dice(fg_logit, foreground),
        "seg_distance": F.mse_loss(pixels.distance.float(), distance),
    }
    side = pixels.features.side_logits
    if side:
        terms["deep_supervision"] = torch.stack(
            [bce(s[:, 0].float(), foreground) for s in side]
        ).mean()
    return terms


def weighted_total(terms: dict[str, Tensor], weights: LossWeights) -> Tensor:
    """Σ weight · term over `terms` (named as the fields of `LossWeights`)."""
    return sum(getattr(weights, name) * value for name, value in terms.items())


def compute_losses(
    outputs: GhistOutputs,
    batch: PatchBatch,
    weights: LossWeights,
    type_weights: Tensor | None = None,
) -> dict[str, Tensor]:
    """All loss terms and `total` for one batch; the forward must have had true expression.
    `type_weights` (C,) weighs the cell-type CE per true type.

    Example:
        >>> out = model(batch.images, batch.instances, batch.cell_patch,  # doctest: +SKIP
        ...             batch.cell_instance, true_expression=batch.cell_expr)
        >>> losses = compute_losses(out, batch, model.config.loss_weights)  # doctest: +SKIP
        >>> losses["total"].backward()  # doctest: +SKIP
    """
    pixels, cells = outputs.pixels, outputs.cells
    if cells.expr_type_true_logits is None:
        raise ValueError("compute_losses needs outputs of a forward given true_expression")
    targets = pixel_targets(batch.instances, batch.cell_patch, batch.cell_instance, batch.cell_type)
    teacher = torch.softmax(cells.expr_type_true_logits.detach().float(), -1)
    terms = {
        **segmentation_losses(pixels, targets.foreground, targets.distance),
        "pixel_type": _cross_entropy(pixels.pixel_type_logits, targets.pixel_type),
        "cell_type": _cross_entropy(cells.type_logits, batch.cell_type, type_weights),
        "neighbourhood": _kl(
            torch.log_softmax(cells.nbhd_logits.float(), -1), batch.cell_nbhd.float()
        ),
        "expression": _row_mean(
            (cells.expression.float() - batch.cell_expr.float()).pow(2).mean(-1)
        ),
        "expression_type": _cross_entropy(cells.expr_type_true_logits, batch.cell_type),
        "consistency": _kl(torch.log_softmax(cells.expr_type_logits.float(), -1), teacher),
    }
    terms["total"] = weighted_total(terms, weights)
    return terms
