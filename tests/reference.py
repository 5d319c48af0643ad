"""Independent float64 reference formulas for the tests, written from DESIGN.md's math.

Nothing here calls ``cskd_viz``. Inputs are anything ``numpy.asarray`` accepts (torch tensors are
converted through ``as_f64``); outputs are numpy float64 values. Loops and sums are explicit on
purpose: the point is a second, plain implementation of each formula.

``mp_*`` functions use ``mpmath`` (arbitrary exponent range), so probabilities of 1e-30 or 1e-3000
are represented exactly and the naive cosine formula needs no rescaling: an exact reference for
rarely predicted classes.
"""

from __future__ import annotations

import math

import mpmath
import numpy as np
import torch
import torch.nn.functional as F


def as_f64(x) -> np.ndarray:
    """The exact values of ``x`` (a tensor of any float dtype, or an array) as float64 numpy."""
    if isinstance(x, torch.Tensor):
        return x.detach().to(torch.float64).cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _row_temperatures(temperature, batch: int) -> np.ndarray:
    if isinstance(temperature, torch.Tensor | np.ndarray) and np.ndim(as_f64(temperature)) == 1:
        return as_f64(temperature)
    return np.full(batch, float(temperature))


# ----------------------------------------------------------------------------- softmax


def log_softmax(z, temperature=1.0) -> np.ndarray:
    """Row-wise ``log softmax(z / T)``; ``T`` a float or one value per row."""
    z = as_f64(z)
    temps = _row_temperatures(temperature, z.shape[0])
    out = np.empty_like(z)
    for i in range(z.shape[0]):
        row = z[i] / temps[i]
        peak = max(row)
        lse = peak + math.log(math.fsum(math.exp(v - peak) for v in row))
        out[i] = row - lse
    return out


def softmax(z, temperature=1.0) -> np.ndarray:
    return np.exp(log_softmax(z, temperature))


def cosine(a, b) -> float:
    """Plain cosine with DESIGN.md's zero rules (two zero vectors: 1, one zero vector: 0)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    na = math.sqrt(math.fsum(x * x for x in a))
    nb = math.sqrt(math.fsum(x * x for x in b))
    if na == 0 and nb == 0:
        return 1.0
    if na == 0 or nb == 0:
        return 0.0
    return math.fsum(x * y for x, y in zip(a, b, strict=True)) / (na * nb)


# ----------------------------------------------------------------------------- CSKD


def per_class_cosine(zs, zt, temperature) -> np.ndarray:
    """``c_j = cos(P_s[:, j], P_t[:, j])``."""
    ps, pt = softmax(zs, temperature), softmax(zt, temperature)
    return np.array([cosine(ps[:, j], pt[:, j]) for j in range(ps.shape[1])])


def batch_cosine_distance(zs, zt, temperature) -> float:
    """``d(T) = 1 - mean_j c_j(T)``."""
    return 1.0 - float(np.mean(per_class_cosine(zs, zt, temperature)))


def per_sample_cosine(zs, zt, temperature=1.0) -> np.ndarray:
    """``s_i = cos(P_s[i], P_t[i])``."""
    ps, pt = softmax(zs, temperature), softmax(zt, temperature)
    return np.array([cosine(ps[i], pt[i]) for i in range(ps.shape[0])])


def cswt_temperatures(zs, zt, t_low=2.0, t_high=6.0) -> np.ndarray:
    """``T_i = t_low + (t_high - t_low) (max s - s_i) / (max s - min s)``; midpoint when no spread."""
    s = per_sample_cosine(zs, zt, 1.0)
    s_max, s_min = max(s), min(s)
    if s_max == s_min:
        return np.full(len(s), (t_low + t_high) / 2)
    return np.array([t_low + (t_high - t_low) * (s_max - v) / (s_max - s_min) for v in s])


def cskd_loss(zs, zt, temperature=4.0, t_low=2.0, t_high=6.0, cswt=True) -> float:
    """``T^2 d(T) + mean(T_i)^2 d(T_i)`` (second term only with CSWT)."""
    loss = temperature**2 * batch_cosine_distance(zs, zt, temperature)
    if cswt:
        temps = cswt_temperatures(zs, zt, t_low, t_high)
        loss += float(np.mean(temps)) ** 2 * batch_cosine_distance(zs, zt, temps)
    return loss


# ----------------------------------------------------------------------------- KD, KL, entropy


def per_sample_kl(zs, zt, temperature=1.0) -> np.ndarray:
    """``KL(P_t[i] || P_s[i]) = sum_j P_t log(P_t / P_s)``."""
    ls, lt = log_softmax(zs, temperature), log_softmax(zt, temperature)
    return np.array(
        [math.fsum(math.exp(b) * (b - a) for a, b in zip(ls[i], lt[i], strict=True)) for i in range(len(ls))]
    )


def kd_loss(zs, zt, temperature=4.0) -> float:
    """Hinton KD ``mean_i T_i^2 KL_i`` (``T^2 mean KL`` for a float ``T``)."""
    temps = _row_temperatures(temperature, as_f64(zs).shape[0])
    kl = per_sample_kl(zs, zt, temperature)
    return float(np.mean(temps**2 * kl))


def kd_loss_mdistiller(logits_student: torch.Tensor, logits_teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """mdistiller's ``kd_loss`` (mdistiller/distillers/KD.py), verbatim up to names."""
    log_pred_student = F.log_softmax(logits_student / temperature, dim=1)
    pred_teacher = F.softmax(logits_teacher / temperature, dim=1)
    loss_kd = F.kl_div(log_pred_student, pred_teacher, reduction="none").sum(1).mean()
    loss_kd *= temperature**2
    return loss_kd


def entropy(z, temperature=1.0) -> np.ndarray:
    lp = log_softmax(z, temperature)
    return np.array([-math.fsum(math.exp(v) * v for v in row) for row in lp])


def top1_agreement(zs, zt) -> float:
    zs, zt = as_f64(zs), as_f64(zt)
    return float(np.mean([int(np.argmax(a) == np.argmax(b)) for a, b in zip(zs, zt, strict=True)]))


# ----------------------------------------------------------------------------- DIST


def pearson(a, b) -> float:
    """Pearson correlation of two vectors (no eps)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    ca, cb = a - a.mean(), b - b.mean()
    return math.fsum(ca * cb) / math.sqrt(math.fsum(ca * ca) * math.fsum(cb * cb))


def dist_loss(zs, zt, temperature=4.0, beta=1.0, gamma=1.0) -> float:
    """DIST (Huang et al. 2022): ``T^2 (beta (1 - mean_i rho(rows)) + gamma (1 - mean_j rho(columns)))``."""
    ps, pt = softmax(zs, temperature), softmax(zt, temperature)
    inter = 1.0 - np.mean([pearson(ps[i], pt[i]) for i in range(ps.shape[0])])
    intra = 1.0 - np.mean([pearson(ps[:, j], pt[:, j]) for j in range(ps.shape[1])])
    return temperature**2 * (beta * inter + gamma * intra)


def dist_loss_published(z_s: torch.Tensor, z_t: torch.Tensor, tau=4.0, beta=1.0, gamma=1.0, eps=1e-8) -> torch.Tensor:
    """The DIST authors' code (hunto/DIST_KD, ``losses/dist_kd.py``), verbatim up to names."""

    def cosine_similarity(a, b):
        return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + eps)

    def pearson_correlation(a, b):
        return cosine_similarity(a - a.mean(1).unsqueeze(1), b - b.mean(1).unsqueeze(1))

    def inter_class_relation(y_s, y_t):
        return 1 - pearson_correlation(y_s, y_t).mean()

    def intra_class_relation(y_s, y_t):
        return inter_class_relation(y_s.transpose(0, 1), y_t.transpose(0, 1))

    y_s = (z_s / tau).softmax(dim=1)
    y_t = (z_t / tau).softmax(dim=1)
    inter_loss = tau**2 * inter_class_relation(y_s, y_t)
    intra_loss = tau**2 * intra_class_relation(y_s, y_t)
    return beta * inter_loss + gamma * intra_loss


# ----------------------------------------------------------------------------- exact (mpmath)


def _mp_softmax(z, temperature, dps: int) -> list[list[mpmath.mpf]]:
    z = as_f64(z)
    temps = _row_temperatures(temperature, z.shape[0])
    with mpmath.workdps(dps):
        rows = []
        for i in range(z.shape[0]):
            e = [mpmath.exp(mpmath.mpf(float(v)) / mpmath.mpf(float(temps[i]))) for v in z[i]]
            total = mpmath.fsum(e)
            rows.append([x / total for x in e])
        return rows


def mp_cosine(a, b, dps: int = 40) -> float:
    """Exact cosine of two vectors of mpmath numbers or floats (naive formula; no underflow in mpmath)."""
    with mpmath.workdps(dps):
        a = [mpmath.mpf(x) for x in a]
        b = [mpmath.mpf(x) for x in b]
        na = mpmath.sqrt(mpmath.fsum(x * x for x in a))
        nb = mpmath.sqrt(mpmath.fsum(x * x for x in b))
        if na == 0 and nb == 0:
            return 1.0
        if na == 0 or nb == 0:
            return 0.0
        return float(mpmath.fsum(x * y for x, y in zip(a, b, strict=True)) / (na * nb))


def mp_per_class_cosine(zs, zt, temperature, dps: int = 40) -> np.ndarray:
    """Exact ``c_j`` from the logits' exact values (mpmath, no rescaling needed)."""
    ps, pt = _mp_softmax(zs, temperature, dps), _mp_softmax(zt, temperature, dps)
    cols = len(ps[0])
    return np.array([mp_cosine([r[j] for r in ps], [r[j] for r in pt], dps) for j in range(cols)])


def mp_column_norms(z, temperature, dps: int = 40) -> list[float]:
    """Exact Euclidean norms of the probability columns (for asserting a column really is tiny)."""
    p = _mp_softmax(z, temperature, dps)
    with mpmath.workdps(dps):
        return [float(mpmath.sqrt(mpmath.fsum(r[j] ** 2 for r in p))) for j in range(len(p[0]))]
