"""Fused batch cosine distance: several temperatures in one pass, with a hand-written backward.

CSKD with CSWT needs ``d(T)`` and ``d(T_i)``. Computed with autograd op by op, the graph has
~40 nodes and each (B, C) tensor is visited many times. Here the temperatures are stacked into
one ``(K, B, C)`` tensor (student and teacher side by side in one ``(2, K, B, C)`` buffer), the
forward runs without recording a graph, and the backward is the closed form below. On CPU the
work is memory-bound (and op-count-bound for small batches), so it is written to touch each
full-size buffer as few times as possible: one ``exp`` per element, in-place updates of
temporaries, no logarithm of a full tensor, the products the cosines need computed once and
reused by the backward. ``cskd_viz.losses`` keeps the op-by-op formulas for the diagnostics, and
the tests compare the two (and gradcheck this one in float64).

For one temperature (dropping the index ``k``), with ``p = softmax(z / T)`` (student) and ``q``
(teacher), ``a_j``/``b_j`` any positive rescaling of the columns ``p_j``/``q_j`` (cosine is
scale invariant), ``c_j = <a_j, b_j> / (|a_j| |b_j|)`` and ``L = w (1 - mean_j c_j)``::

    h_ij = a_ij dL/da_ij = -(w / C) (a_ij b_ij / (|a_j| |b_j|) - c_j a_ij^2 / |a_j|^2)   (= dL/d log p_ij)
    dL/dz_ij = (h_ij - p_ij sum_k h_ik) / T_i

Exactness: the columns are used as they are (``a = p``) when their sums of squares are normal
numbers comfortably above the underflow threshold (``B * tiny * 2**64``): squares or products that
lost precision to underflow are then below ``2**-64`` of the column's largest square and cannot
move a cosine. A column of a rarely predicted class below that threshold (e.g. all probabilities
~1e-25 in float32) is replaced by its direction computed in log space,
``exp(log p - max_i log p)`` (largest entry 1), so its cosine and gradient stay exact.
"""

from __future__ import annotations

import torch
from torch import Tensor


def shifted_logits(student: Tensor, teacher: Tensor) -> Tensor:
    """``(2, B, C)``: ``z - max_j z_ij`` for student (``[0]``) and teacher (``[1]``), no gradient.

    Every row's largest entry is 0, so ``exp(shifted / T)`` lies in ``(0, 1]`` with a row maximum
    of 1 for any ``T > 0`` (``max_j z_ij / T = max_j (z_ij / T)``): one shift serves all temperatures.
    """
    out = student.new_empty((2, *student.shape))
    for side, logits in enumerate((student, teacher)):
        logits = logits.detach()
        torch.sub(logits, logits.amax(1, keepdim=True), out=out[side])
    return out


def _log_space_directions(p: Tensor, shifted: Tensor, inv_t: Tensor, row_sum: Tensor, columns: Tensor) -> Tensor:
    """Copy of ``p`` whose ``columns`` hold ``exp(log p - max_i log p)`` (computed from the logits)."""
    directions = p.clone()
    log_p = shifted[:, :, columns].unsqueeze(1) * inv_t - row_sum.log()  # (2, K, B, n)
    directions[..., columns] = torch.exp(log_p - log_p.amax(2, keepdim=True))
    return directions


class _WeightedBatchCosineDistance(torch.autograd.Function):
    @staticmethod
    def forward(ctx, student: Tensor, teacher: Tensor, temperatures: Tensor, weights: Tensor, shifted: Tensor):
        # temperatures: (K, B, 1) or (K, 1, 1); weights: (K,); shifted: (2, B, C) from shifted_logits.
        # Returns sum_k w_k d(T_k).
        batch = student.shape[0]
        inv_t = temperatures.reciprocal()
        p = (shifted.unsqueeze(1) * inv_t).exp_()  # (2, K, B, C); one exp per element
        row_sum = p.sum(3, keepdim=True)  # >= 1: the row maximum contributes exp(0)
        p.div_(row_sum)  # probabilities
        directions = p
        squares = p.square()  # columns' squares and products, kept for the backward
        products = p[0] * p[1]
        sum_squares = squares.sum(2)  # (2, K, C)
        threshold = batch * torch.finfo(p.dtype).tiny * 2.0**64
        if float(sum_squares.amin()) <= threshold:  # rarely predicted classes: exact directions
            columns = (sum_squares <= threshold).flatten(0, 1).any(0).nonzero().squeeze(1)
            directions = _log_space_directions(p, shifted, inv_t, row_sum, columns)
            squares = directions.square()
            products = directions[0] * directions[1]
            sum_squares = squares.sum(2)
        norms = sum_squares.sqrt_()  # (2, K, C)
        cosine = products.sum(1) / (norms[0] * norms[1])  # (K, C)
        ctx.save_for_backward(p, squares, products, norms, cosine, inv_t, weights)
        return weights @ (1.0 - cosine.mean(1))

    @staticmethod
    def backward(ctx, grad: Tensor):
        if torch.is_grad_enabled():
            # create_graph=True: the closed form below records no graph, so second derivatives
            # would silently come out as 0. Refuse instead.
            raise RuntimeError(
                "batch_cosine_distance/cskd_loss use a fused backward that is differentiable once; "
                "double backward (create_graph=True) is not supported"
            )
        p, squares, products, norms, cosine, inv_t, weights = ctx.saved_tensors
        coef = (grad * weights / cosine.shape[1]).unsqueeze(1)  # (K, 1); h carries a minus sign
        grads = []
        for side in (0, 1):
            if not ctx.needs_input_grad[side]:
                grads.append(None)
                continue
            norm_a = norms[side]
            # h = coef * (c a^2 / |a|^2 - a b / (|a| |b|)), in one buffer updated in place
            h = torch.mul(squares[side], (coef * cosine / norm_a.square()).unsqueeze(1))
            h.addcmul_(products, (coef / (norm_a * norms[1 - side])).unsqueeze(1), value=-1.0)
            h.addcmul_(p[side], h.sum(2, keepdim=True), value=-1.0)  # dL/d(z / T)
            # sum_k h_k / T_k (a fresh tensor when K > 1: a view of h would keep all of h alive as .grad)
            grad_z = h[0].mul_(inv_t[0]) if h.shape[0] == 1 else torch.mul(h[0], inv_t[0])
            for k in range(1, h.shape[0]):
                grad_z.addcmul_(h[k], inv_t[k])
            grads.append(grad_z)
        return grads[0], grads[1], None, None, None


def weighted_batch_cosine_distance(
    student_logits: Tensor,
    teacher_logits: Tensor,
    temperatures: Tensor,
    weights: Tensor,
    shifted: Tensor | None = None,
) -> Tensor:
    """``sum_k weights[k] * d(temperatures[k])`` for validated, same-dtype ``(B, C)`` logits.

    Args:
        student_logits: ``(B, C)``.
        teacher_logits: ``(B, C)``.
        temperatures: ``(K, B, 1)`` per-sample or ``(K, 1, 1)`` shared temperatures (no gradient).
        weights: ``(K,)`` weights (no gradient).
        shifted: optional ``(2, B, C)`` :func:`shifted_logits` of the logits, if already computed.
    """
    if shifted is None:
        shifted = shifted_logits(student_logits, teacher_logits)
    return _WeightedBatchCosineDistance.apply(student_logits, teacher_logits, temperatures, weights, shifted)
