"""Fused batch cosine distance: several temperatures in one pass, with a hand-written backward.

CSKD with CSWT needs ``d(T)`` and ``d(T_i)``. Computed with autograd op by op, the graph has
~40 nodes and each (B, C) tensor is visited many times. Here both temperatures are stacked into
one ``(K, B, C)`` tensor, the forward runs without recording a graph, and the backward is the
closed form below. ``cskd_viz.losses`` keeps the op-by-op path for ``group=`` (distributed) use,
and the tests compare the two (and gradcheck this one in float64).

For one temperature (dropping the index ``k``), with ``l = log_softmax(z / T)``, column directions
``u = exp(l - max_i l)`` (student) and ``v`` (teacher), ``c_j = <u_j, v_j> / (|u_j| |v_j|)`` and
``L = w (1 - mean_j c_j)``::

    dL/du_ij = -(w / C) (v_ij / (|u_j| |v_j|) - c_j u_ij / |u_j|^2)      (the max is a stop-gradient:
    dL/dl_ij = u_ij dL/du_ij = h_ij                                     cosine is scale invariant)
    dL/dz_ij = (h_ij - p_ij sum_k h_ik) / T_i,   p = exp(l)
"""

from __future__ import annotations

import torch
from torch import Tensor


def _directions(scaled: Tensor) -> tuple[Tensor, Tensor]:
    """``(log_softmax over classes, column directions)`` of ``(K, B, C)`` scaled logits."""
    log_p = torch.log_softmax(scaled, dim=2)
    return log_p, torch.exp(log_p - log_p.amax(dim=1, keepdim=True))


class _WeightedBatchCosineDistance(torch.autograd.Function):
    @staticmethod
    def forward(ctx, student: Tensor, teacher: Tensor, temperatures: Tensor, weights: Tensor) -> Tensor:
        # temperatures: (K, B, 1) or (K, 1, 1); weights: (K,). Returns sum_k w_k d(T_k).
        log_s, u = _directions(student.unsqueeze(0) / temperatures)
        log_t, v = _directions(teacher.unsqueeze(0) / temperatures)
        norm_u = torch.linalg.vector_norm(u, dim=1)  # (K, C)
        norm_v = torch.linalg.vector_norm(v, dim=1)
        cosine = (u * v).sum(1) / (norm_u * norm_v)
        ctx.save_for_backward(log_s, u, log_t, v, norm_u, norm_v, cosine, temperatures, weights)
        return (weights * (1.0 - cosine.mean(1))).sum()

    @staticmethod
    def backward(ctx, grad: Tensor):
        if torch.is_grad_enabled():
            # create_graph=True: the closed form below records no graph, so second derivatives
            # would silently come out as 0. Refuse instead.
            raise RuntimeError(
                "batch_cosine_distance/cskd_loss use a fused backward that is differentiable once; "
                "double backward (create_graph=True) is not supported"
            )
        log_s, u, log_t, v, norm_u, norm_v, cosine, temperatures, weights = ctx.saved_tensors
        coef = (-grad * weights / cosine.shape[1]).view(-1, 1, 1)
        grads = []
        for needed, log_a, a, b, norm_a, norm_b in (
            (ctx.needs_input_grad[0], log_s, u, v, norm_u, norm_v),
            (ctx.needs_input_grad[1], log_t, v, u, norm_v, norm_u),
        ):
            if not needed:
                grads.append(None)
                continue
            inv_ab = (1.0 / (norm_a * norm_b)).unsqueeze(1)
            c_over_aa = (cosine / (norm_a * norm_a)).unsqueeze(1)
            h = coef * a * (b * inv_ab - a * c_over_aa)
            grad_scaled = h - torch.exp(log_a) * h.sum(2, keepdim=True)
            grads.append((grad_scaled / temperatures).sum(0))
        return grads[0], grads[1], None, None


def weighted_batch_cosine_distance(
    student_logits: Tensor, teacher_logits: Tensor, temperatures: Tensor, weights: Tensor
) -> Tensor:
    """``sum_k weights[k] * d(temperatures[k])`` for validated, same-dtype ``(B, C)`` logits.

    Args:
        student_logits: ``(B, C)``.
        teacher_logits: ``(B, C)``.
        temperatures: ``(K, B, 1)`` per-sample or ``(K, 1, 1)`` shared temperatures (no gradient).
        weights: ``(K,)`` weights (no gradient).
    """
    return _WeightedBatchCosineDistance.apply(student_logits, teacher_logits, temperatures, weights)
