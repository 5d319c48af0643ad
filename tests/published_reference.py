"""Independent float64 re-derivation of the published CSKD objective (issue 13), for the tests.

Nothing here calls ``cskd_viz``: loops and ``math.fsum`` on numpy float64, from the formulas of the
issue. Softmax comes from ``tests/reference.py`` (itself independent of the package).
"""

from __future__ import annotations

import math

import numpy as np
import reference as ref

EPS = 1e-8


def cosine(a, b, abs_eps: bool) -> float:
    """``|a.b| / (|a| |b| + 1e-8)`` (published) or the plain cosine."""
    if not abs_eps:
        return ref.cosine(a, b)
    dot = math.fsum(x * y for x, y in zip(a, b, strict=True))
    na = math.sqrt(math.fsum(x * x for x in a))
    nb = math.sqrt(math.fsum(x * x for x in b))
    return abs(dot) / (na * nb + EPS)


def _factor(temperature) -> float:
    t = np.asarray(temperature, dtype=np.float64)
    return float(t**2) if t.ndim == 0 else float(np.mean(t)) ** 2


def cs(zs, zt, temperature, alpha: float = 2.0, abs_eps: bool = True) -> float:
    """``alpha factor (1 - mean_j cos(P_s[:, j], P_t[:, j]))``, factor ``T^2`` or ``mean(T_i)^2``."""
    ps, pt = ref.softmax(zs, temperature), ref.softmax(zt, temperature)
    cosines = [cosine(ps[:, j], pt[:, j], abs_eps) for j in range(ps.shape[1])]
    return alpha * _factor(temperature) * (1.0 - math.fsum(cosines) / len(cosines))


def cswt(zs, zt, t_low: float = 2.0, t_high: float = 6.0, abs_eps: bool = True) -> np.ndarray:
    ps, pt = ref.softmax(zs, 1.0), ref.softmax(zt, 1.0)
    s = [cosine(ps[i], pt[i], abs_eps) for i in range(ps.shape[0])]
    hi, lo = max(s), min(s)
    if hi == lo:
        return np.full(len(s), (t_low + t_high) / 2)
    return np.array([t_low + (t_high - t_low) * (hi - v) / (hi - lo) for v in s])


def _gram(a: np.ndarray) -> np.ndarray:
    """``a a^T`` by explicit sums."""
    n = a.shape[0]
    return np.array([[math.fsum(a[i] * a[k]) for k in range(n)] for i in range(n)])


def cc(zs, zt, temperature, abs_eps: bool = True, classes=None) -> float:
    """``1 - mean over rows (the masked ones) of cos(P_t^T P_t, P_s^T P_s)``."""
    gs = _gram(ref.softmax(zs, temperature).T)
    gt = _gram(ref.softmax(zt, temperature).T)
    rows = range(gs.shape[0]) if classes is None else [j for j, keep in enumerate(classes) if keep]
    cosines = [cosine(gt[j], gs[j], abs_eps) for j in rows]
    return 1.0 - math.fsum(cosines) / len(cosines)


def bc(zs, zt, temperature, abs_eps: bool = True) -> float:
    """``1 - mean_rows cos(P_t P_t^T, P_s P_s^T)``."""
    gs, gt = _gram(ref.softmax(zs, temperature)), _gram(ref.softmax(zt, temperature))
    return 1.0 - math.fsum(cosine(gt[i], gs[i], abs_eps) for i in range(gs.shape[0])) / gs.shape[0]


def masks(zt) -> tuple[np.ndarray, np.ndarray]:
    """Teacher max-probability <= its median; summed class probability <= its median (numpy.percentile 50)."""
    p = ref.softmax(zt, 1.0)
    confidence = p.max(axis=1)
    mass = np.array([math.fsum(p[:, j]) for j in range(p.shape[1])])
    return confidence <= np.percentile(confidence, 50), mass <= np.percentile(mass, 50)


def cross_entropy(z, y) -> float:
    ls = ref.log_softmax(z, 1.0)
    return -math.fsum(ls[i, int(y[i])] for i in range(len(y))) / len(y)


def objective(
    weak, strong, y, *, w_ce=1.0, w_kd=1.0, temperature=4.0, t_low=2.0, t_high=6.0, corr_temperature=4.0, **switches
) -> dict:
    """The weighted terms and the temperatures; ``weak``/``strong``: ``(z_s, z_t)`` pairs (``strong`` may be None).

    ``cs``/``cs_mat`` at ``temperature`` and ``T_i``; ``cc``/``bc`` at ``corr_temperature`` (fixed at 4 in the
    published code, whatever ``temperature`` is) and ``T_i``.
    """
    opts = {"strong_view": True, "cc": True, "bc": True, "masks": "as_published", "alpha": 2.0, "abs_eps": True}
    opts.update(switches)
    alpha, eps, mode = opts["alpha"], opts["abs_eps"], opts["masks"]
    zs, zt = ref.as_f64(weak[0]), ref.as_f64(weak[1])
    temps = cswt(zs, zt, t_low, t_high, eps)
    sample_mask, class_mask = masks(zt)
    rows = sample_mask if mode == "per_sample" else np.ones(len(zs), dtype=bool)
    frac = float(np.mean(sample_mask)) if mode == "as_published" else 1.0
    class_frac = float(np.mean(class_mask)) if mode == "as_published" else 1.0

    def kd_pair(a, b, t_i):
        return cs(a, b, temperature, alpha, eps) + cs(a, b, t_i, alpha, eps)

    kd = frac * kd_pair(zs[rows], zt[rows], temps[rows])
    ce = cross_entropy(zs, y)
    if opts["strong_view"]:
        ss, ts = ref.as_f64(strong[0]), ref.as_f64(strong[1])
        kd += kd_pair(ss, ts, temps)
        ce += cross_entropy(ss, y)
    out = {"loss_ce": w_ce * ce, "loss_kd": w_kd * kd, "temperatures": temps}
    if opts["cc"]:
        classes = class_mask if mode == "per_sample" else None
        out["loss_cc"] = w_kd * class_frac * sum(cc(zs, zt, t, eps, classes) for t in (corr_temperature, temps))
    if opts["bc"]:
        out["loss_bc"] = w_kd * frac * sum(bc(zs[rows], zt[rows], t, eps) for t in (corr_temperature, temps[rows]))
    return out
