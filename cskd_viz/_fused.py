"""Fused batch cosine distance: several temperatures in one pass, with a hand-written backward.

CSKD with CSWT needs ``d(T)`` and ``d(T_i)``. Computed with autograd op by op, the graph has
~40 nodes and each (B, C) tensor is visited many times. Here the temperatures are stacked into
one ``(K, B, C)`` tensor (student and teacher side by side in one ``(2, K, B, C)`` buffer), the
forward runs without recording a graph, and the backward is the closed form below.

Speed (CPU): small batches are bound by the number of tensor ops (~5-20 us of Python and dispatch
overhead each), large ones by memory traffic. So: one ``exp`` per element, in-place updates of
temporaries, no logarithm of a full tensor, the products the cosines need computed once and reused
by the backward, and, for large inputs, blocks of rows small enough for the CPU cache (every op of
a block reads what the previous op just wrote, instead of streaming full-size tensors through main
memory once per op). ``cskd_viz.losses`` keeps the op-by-op formulas for the diagnostics, and the
tests compare the two (and gradcheck this one in float64). A ``torch.compile``d version of the same
math was measured too: no faster than this eager code at B=1024, C=1000 and ~35 s to compile per
variant, so it is not used.

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

from cskd_viz._validation import check_cskd_batch

# Up to this many elements per (B, C) tensor the work is bound by the number of tensor ops: such
# inputs are processed whole, with as few ops as possible.
SMALL = 2**15
# Larger inputs are processed in blocks of rows of about this many elements of the working set
# (2 MiB in float32: a few times a core's L2 cache, well inside a shared L3).
BLOCK = 2**19


def _row_blocks(batch: int, row_elements: int) -> list[slice | None]:
    """Slices of the batch for blocks of ~``BLOCK`` elements; ``[None]`` (the whole batch) for small inputs."""
    rows = max(1, BLOCK // row_elements)
    if batch * row_elements <= 2 * SMALL or rows >= batch:
        return [None]
    return [slice(start, start + rows) for start in range(0, batch, rows)]


def _take(tensor: Tensor, rows: slice | None) -> Tensor:
    """``tensor[:, rows]`` for ``(K, B, ...)`` tensors; a size-1 (shared) batch dimension and ``None`` pass through."""
    return tensor if rows is None or tensor.shape[1] == 1 else tensor[:, rows]


class ShiftedLogits:
    """``z - max_j z_ij`` of student (``[0]``) and teacher (``[1]``), ``(2, B, C)``, no gradient.

    Every row's largest entry is 0, so ``exp(shifted / T)`` lies in ``(0, 1]`` with a row maximum
    of 1 for any ``T > 0`` (``max_j z_ij / T = max_j (z_ij / T)``): one shift serves all
    temperatures. Small inputs are shifted once, whole (3 ops); large ones keep only the row maxima
    and hand out blocks of rows on demand (no full-size copy of the logits).
    """

    def __init__(self, student: Tensor, teacher: Tensor) -> None:
        if torch.is_grad_enabled():
            student, teacher = student.detach(), teacher.detach()
        self.batch, self.classes = student.shape
        self.whole = None
        if student.numel() <= SMALL:
            both = torch.stack((student, teacher))
            self.whole = both.sub_(both.amax(2, keepdim=True))
        else:
            self.logits = (student, teacher)
            self.row_max = (student.amax(1, keepdim=True), teacher.amax(1, keepdim=True))

    def rows(self, rows: slice | None = None, scratch: Tensor | None = None) -> Tensor:
        """``(2, n, C)`` for the rows ``rows`` (``None``: all).

        Small inputs: a view, not to be modified. Large ones: a new tensor, or the first ``n`` rows of
        ``scratch`` (a ``(2, >= n, C)`` buffer reused from block to block: no allocation per block).
        """
        if self.whole is not None:
            return self.whole if rows is None else self.whole[:, rows]
        rows = slice(None) if rows is None else rows
        student, teacher = self.logits
        n = student[rows].shape[0]
        out = student.new_empty((2, n, self.classes)) if scratch is None else scratch[:, :n]
        for side in (0, 1):
            torch.sub(self.logits[side][rows], self.row_max[side][rows], out=out[side])
        return out

    def columns(self, columns: Tensor) -> Tensor:
        """``(2, B, n)`` for the classes ``columns``."""
        if self.whole is not None:
            return self.whole[:, :, columns]
        return torch.stack([z[:, columns] - m for z, m in zip(self.logits, self.row_max, strict=True)])

    def row_cosines(self, temperature: float | Tensor = 1.0) -> Tensor:
        """``s_i = cos(softmax(z_s[i] / T), softmax(z_t[i] / T))``, ``(B,)``; ``T`` a float or ``(B,)``.

        Cosine is scale invariant, so the softmax normalisation is skipped: the rows compared are
        ``exp(shifted / T)``, whose largest entry is 1 (norm ``>= 1``: no underflow, no zero division).
        """
        per_row = isinstance(temperature, Tensor)
        if self.whole is not None:  # small: the shared shifted logits are not modified
            if per_row or temperature != 1.0:
                return _cosine_of_rows(self.whole.div(temperature.view(1, -1, 1) if per_row else temperature).exp_())
            return _cosine_of_rows(self.whole.exp())
        cosines, scratch = [], None
        for rows in _row_blocks(self.batch, 2 * self.classes):
            block = self.rows(rows, scratch)  # a block of our own: modified in place
            scratch = block if scratch is None else scratch
            if per_row or temperature != 1.0:
                block.div_(_take(temperature.view(1, -1, 1), rows) if per_row else temperature)
            cosines.append(_cosine_of_rows(block.exp_()))
        return cosines[0] if len(cosines) == 1 else torch.cat(cosines)


def _cosine_of_rows(rows: Tensor) -> Tensor:
    """``(n,)`` cosines of ``rows[0, i]`` and ``rows[1, i]``, ``(2, n, C)`` rows with maxima 1 (consumed)."""
    norm_s, norm_t = torch.linalg.vector_norm(rows, dim=2).unbind(0)
    rows_s, rows_t = rows.unbind(0)
    return rows_s.mul_(rows_t).sum(1).div_(norm_s * norm_t).clamp_(0.0, 1.0)


def _softmax(shifted: Tensor, temperatures: Tensor, p=None, row_sum=None) -> tuple[Tensor, Tensor]:
    """``p = softmax(shifted / T_k)``, ``(2, K, rows, C)``, and its row sums (into ``p``/``row_sum`` if given)."""
    p = torch.div(shifted.unsqueeze(1), temperatures, out=p).exp_()  # one exp per element
    row_sum = torch.sum(p, 3, keepdim=True, out=row_sum)  # >= 1: the row maximum contributes exp(0)
    return p.div_(row_sum), row_sum


def _log_space_directions(
    p: Tensor, shifted: ShiftedLogits, temperatures: Tensor, row_sum: Tensor, columns: Tensor
) -> Tensor:
    """Copy of ``p`` whose ``columns`` hold ``exp(log p - max_i log p)`` (computed from the logits)."""
    directions = p.clone()
    log_p = shifted.columns(columns).unsqueeze(1) / temperatures - row_sum.log()  # (2, K, B, n)
    directions[..., columns] = torch.exp(log_p - log_p.amax(2, keepdim=True))
    return directions


class _WeightedBatchCosineDistance(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx, student: Tensor, teacher: Tensor, temperatures: Tensor, weights: Tensor, shifted: ShiftedLogits
    ) -> Tensor:
        # temperatures: (K, B, 1) or (K, 1, 1); weights: (K,). Returns sum_k w_k d(T_k).
        # Column statistics keep their batch dimension: (K, 1, C).
        batch, classes = student.shape
        blocks = _row_blocks(batch, 2 * temperatures.shape[0] * classes)
        blocked = blocks != [None]
        # Without a teacher gradient the teacher's p is not needed after its squares: the product
        # a b (the other tensor the backward needs) overwrites it, and only p is kept.
        separate_cross = ctx.needs_input_grad[1]
        p = student.new_empty((2, temperatures.shape[0], batch, classes)) if blocked else None
        row_sum = student.new_empty((*p.shape[:3], 1)) if blocked else None
        cross = torch.empty_like(p[0]) if blocked and separate_cross else None
        squares_sum = dot = shifted_buffer = squares_buffer = None  # [|a|^2, |b|^2] (2, K, 1, C), <a, b> (K, 1, C)
        for rows in blocks:
            block_shifted = shifted.rows(rows, shifted_buffer)
            block_p, block_sum = _softmax(
                block_shifted, _take(temperatures, rows), *(p[:, :, rows], row_sum[:, :, rows]) if blocked else ()
            )
            if blocked and squares_buffer is None:  # buffers reused by every block
                shifted_buffer, squares_buffer = block_shifted, torch.empty_like(block_p)
            block_squares = torch.square(block_p, out=squares_buffer[:, :, : block_p.shape[2]] if blocked else None)
            if separate_cross:
                block_cross = torch.mul(block_p[0], block_p[1], out=_take(cross, rows) if blocked else None)
            else:
                block_cross = block_p[1].mul_(block_p[0])
            if not blocked:
                p, row_sum, cross = block_p, block_sum, block_cross
            block_squares, block_dot = block_squares.sum(2, keepdim=True), block_cross.sum(1, keepdim=True)
            if squares_sum is None:
                squares_sum, dot = block_squares, block_dot
            else:
                squares_sum.add_(block_squares)
                dot.add_(block_dot)
        if not separate_cross:
            cross = p[1]
        directions = p
        threshold = batch * torch.finfo(p.dtype).tiny * 2.0**64
        if float(squares_sum.amin()) <= threshold:  # rarely predicted classes: exact directions
            columns = (squares_sum <= threshold).flatten(0, 2).any(0).nonzero().squeeze(1)
            if not separate_cross:  # p[1] holds a b: the teacher's p, from the logits again
                torch.exp(torch.div(shifted.rows()[1], temperatures).sub_(row_sum[1].log()), out=p[1])
            directions = _log_space_directions(p, shifted, temperatures, row_sum, columns)
            cross = directions[0] * directions[1]
            squares_sum, dot = directions.square().sum(2, keepdim=True), cross.sum(1, keepdim=True)
        # |a_j| |b_j| as one square root: identical columns then give a cosine within 1 ulp of 1.
        # The product of two small (normal) sums of squares can still underflow (float64: 1e-174 *
        # 1e-178); those columns take the two square roots separately.
        squares_product = squares_sum.prod(0)
        norm_products = torch.where(
            squares_product >= torch.finfo(p.dtype).tiny,
            squares_product.sqrt(),
            squares_sum[0].sqrt() * squares_sum[1].sqrt(),
        )
        cosine = dot.div_(norm_products)
        ctx.save_for_backward(p, directions, cross, cosine, squares_sum, norm_products, temperatures, weights)
        return weights @ (1.0 - cosine.mean((1, 2)))

    @staticmethod
    def backward(ctx, grad: Tensor):
        if torch.is_grad_enabled():
            # create_graph=True: the closed form below records no graph, so second derivatives
            # would silently come out as 0. Refuse instead.
            raise RuntimeError(
                "batch_cosine_distance/cskd_loss use a fused backward that is differentiable once; "
                "double backward (create_graph=True) is not supported"
            )
        p, directions, cross, cosine, squares_sum, norm_products, temperatures, weights = ctx.saved_tensors
        # the scalar factors grad * w_k / C, folded into the per-row 1 / T_k
        row_scale = (grad / cosine.shape[2] * weights).view(-1, 1, 1) / temperatures  # (K, B or 1, 1)
        blocks = _row_blocks(p.shape[2], p[:, :, 0].numel())
        blocked = blocks != [None]
        grads = []
        for side in (0, 1):
            if not ctx.needs_input_grad[side]:
                grads.append(None)
                continue
            ratio = cosine / squares_sum[side]
            grad_z = p.new_empty(p.shape[2:]) if blocked else None
            h_buffer = None  # one (K, rows, C) buffer for all the blocks
            for rows in blocks:
                # h / coef = c a^2 / |a|^2 - a b / (|a| |b|), built in place
                block_directions = _take(directions[side], rows)
                if blocked and h_buffer is None:
                    h_buffer = torch.empty_like(block_directions)
                h = torch.square(block_directions, out=h_buffer[:, : block_directions.shape[1]] if blocked else None)
                h.mul_(ratio)
                h.addcdiv_(_take(cross, rows), norm_products, value=-1.0)
                h.addcmul_(_take(p[side], rows), h.sum(2, keepdim=True), value=-1.0)  # d/d(z / T)
                scale = _take(row_scale, rows)
                if not blocked:  # the whole batch at once (small input): fewest ops
                    h.mul_(scale)  # sum_k coef_k h_k / T_k
                    grad_z = h.squeeze(0) if h.shape[0] == 1 else h.sum(0)
                    continue
                out = torch.mul(h[0], scale[0], out=grad_z[rows])
                for k in range(1, h.shape[0]):
                    out.addcmul_(h[k], scale[k])
            grads.append(grad_z)
        return grads[0], grads[1], None, None, None


def weighted_batch_cosine_distance(
    student_logits: Tensor,
    teacher_logits: Tensor,
    temperatures: Tensor,
    weights: Tensor,
    shifted: ShiftedLogits | None = None,
) -> Tensor:
    """``sum_k weights[k] * d(T_k)`` for validated, same-dtype ``(B, C)`` logits.

    Refuses ``B < 2`` (a ``ValueError``, as the public losses do): with one sample every column
    cosine is 1 trivially.

    Args:
        student_logits: ``(B, C)``, ``B >= 2``.
        teacher_logits: ``(B, C)``.
        temperatures: ``(K, B, 1)`` per sample or ``(K, 1, 1)`` shared (no gradient).
        weights: ``(K,)`` weights (no gradient).
        shifted: the :class:`ShiftedLogits` of the logits, if the caller already has them.
    """
    check_cskd_batch(student_logits.shape[0], "the batch cosine distance")
    if shifted is None:
        shifted = ShiftedLogits(student_logits, teacher_logits)
    return _WeightedBatchCosineDistance.apply(student_logits, teacher_logits, temperatures, weights, shifted)
