"""Metrics on torchmetrics: accumulated over batches == computed at once == float64 references; DDP sync.

The 2-process test runs this file as a script on 2 gloo ranks (rendezvous on 127.0.0.1): each rank
feeds its shard of one dataset to the metrics and to a ``Monitor(group=WORLD)``, and the parent
checks that the synchronised values equal one process's values on the concatenated data.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import traceback
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import torch

from cskd_viz import losses
from cskd_viz.metrics import (
    Agreement,
    PerClassCosine,
    TemperatureStats,
    agreement,
    class_cosine,
    temperature_stats,
)
from tests import reference as ref

WORLD = 2
_DEADLINE_S = 100


def _batches(seed: int, sizes=(7, 5, 12, 1, 9), classes: int = 6, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    out = []
    for n in sizes:
        teacher = 3.0 * torch.randn(n, classes, generator=g, dtype=dtype)
        student = teacher + torch.randn(n, classes, generator=g, dtype=dtype)
        targets = torch.randint(0, classes, (n,), generator=g)
        out.append((student, teacher, targets))
    return out


def _cat(batches, i):
    return torch.cat([b[i] for b in batches])


# ----------------------------------------------------------------------------- per-class cosine


def test_per_class_cosine_accumulated_equals_at_once_and_reference():
    batches = _batches(seed=1)
    metric = PerClassCosine(6, temperature=3.0)
    for s, t, _ in batches:
        metric.update(s, t)
    all_s, all_t = _cat(batches, 0), _cat(batches, 1)
    at_once = class_cosine(all_s, all_t, 3.0)
    np.testing.assert_allclose(metric.compute().numpy(), at_once.numpy(), rtol=1e-12)
    np.testing.assert_allclose(at_once.numpy(), ref.per_class_cosine(all_s, all_t, 3.0), rtol=1e-12)
    # the batch of one sample (sizes 7, 5, 12, 1, 9) counts in compute() but not in the batch mean:
    # its per-class cosines are 1 whatever the logits
    kept = [(s, t) for s, t, _ in batches if s.shape[0] >= 2]
    assert len(kept) == len(batches) - 1
    batch_mean = np.mean([ref.per_class_cosine(s, t, 3.0) for s, t in kept], axis=0)
    np.testing.assert_allclose(metric.compute_batch_mean().numpy(), batch_mean, rtol=1e-12)
    assert int(metric.samples) == all_s.shape[0] and int(metric.batches) == len(kept)


def test_per_class_cosine_is_exact_for_a_rarely_predicted_class():
    """Class 2's probabilities are ~1e-200: their squares underflow float64 without the log-space scales."""
    g = torch.Generator().manual_seed(2)
    teacher = torch.randn(40, 3, generator=g, dtype=torch.float64)
    teacher[:, 2] = -460.0 + torch.randn(40, generator=g, dtype=torch.float64)
    student = teacher + 0.3 * torch.randn(40, 3, generator=g, dtype=torch.float64)
    metric = PerClassCosine(3, temperature=1.0)
    for k in range(0, 40, 8):
        metric.update(student[k : k + 8], teacher[k : k + 8])
    expected = ref.mp_per_class_cosine(student, teacher, 1.0)
    np.testing.assert_allclose(metric.compute().numpy(), expected, rtol=1e-12)
    np.testing.assert_allclose(class_cosine(student, teacher, 1.0).numpy(), expected, rtol=1e-12)


def test_identical_logits_give_exactly_one():
    z = torch.randn(9, 5, generator=torch.Generator().manual_seed(3))
    assert class_cosine(z, z).tolist() == [1.0] * 5
    metric = PerClassCosine(5)
    metric.update(z, z)
    assert metric.compute().tolist() == pytest.approx([1.0] * 5, abs=1e-15)


def test_per_class_cosine_merge_forward_and_reset():
    batches = _batches(seed=4)
    single, a, b = PerClassCosine(6), PerClassCosine(6), PerClassCosine(6)
    for k, (s, t, _) in enumerate(batches):
        single.update(s, t)
        (a if k % 2 else b).update(s, t)
    a.merge_state(b)
    np.testing.assert_allclose(a.compute().numpy(), single.compute().numpy(), rtol=1e-12)
    forwarded = PerClassCosine(6)
    s, t, _ = batches[0]
    np.testing.assert_allclose(forwarded(s, t).numpy(), class_cosine(s, t).numpy(), rtol=1e-12)
    single.reset()
    with pytest.raises(RuntimeError, match="before any update"):
        single.compute()


def test_metrics_validate_before_changing_state():
    s, t, y = _batches(seed=5)[0]
    cosine = PerClassCosine(6)
    cosine.update(s, t)
    before = cosine.sums.clone()
    with pytest.raises(ValueError, match="student_logits has 3 classes, the metric expects 6"):
        cosine.update(s[:, :3], t[:, :3])
    with pytest.raises(ValueError, match="teacher_logits contains NaN"):
        cosine.update(s, torch.full_like(t, float("nan")))
    assert torch.equal(cosine.sums, before) and int(cosine.samples) == s.shape[0]
    agree = Agreement()
    agree.update(s, t, y)
    with pytest.raises(TypeError, match="integer dtype"):
        agree.update(s, t, y.float())
    with pytest.raises(ValueError, match="targets must have shape"):
        agree.update(s, t, y[:2])
    assert agree.counts.tolist()[0] == s.shape[0]  # the refused batches were not counted
    stats = TemperatureStats()
    stats.update(torch.tensor([3.0, 4.0]))
    with pytest.raises(ValueError, match="temperatures must be > 0"):
        stats.update(torch.tensor([3.0, -1.0]))
    assert float(stats.moments[0]) == 2


def test_metric_parameters_are_validated():
    with pytest.raises(ValueError, match="num_classes must be a positive int"):
        PerClassCosine(0)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        PerClassCosine(3, temperature=0.0)
    with pytest.raises(ValueError, match="t_low must be <= t_high"):
        TemperatureStats(5.0, 2.0)
    with pytest.raises(TypeError, match="bins must be a positive int"):
        TemperatureStats(bins=2.5)


# ----------------------------------------------------------------------------- temperatures


def test_temperature_stats_accumulated_equals_at_once():
    g = torch.Generator().manual_seed(6)
    chunks = [2.0 + 4.0 * torch.rand(n, generator=g, dtype=torch.float64) for n in (5, 17, 1, 30)]
    chunks.append(torch.tensor([2.0, 6.0, 4.0], dtype=torch.float64))
    metric = TemperatureStats(2.0, 6.0, bins=8)
    for c in chunks:
        metric.update(c)
    streamed, exact = metric.compute(), temperature_stats(torch.cat(chunks), 2.0, 6.0, bins=8)
    for key in ("count", "min", "max"):
        assert streamed[key] == exact[key]
    for key in ("mean", "std"):
        assert streamed[key] == pytest.approx(exact[key], rel=1e-12)
    assert streamed["histogram"].tolist() == exact["histogram"].tolist()
    allv = torch.cat(chunks)
    assert exact["histogram"].tolist() == np.histogram(allv.numpy(), bins=8, range=(2.0, 6.0))[0].tolist()
    fine_bin = 4.0 / (8 * 100)
    for q in (0.05, 0.25, 0.5, 0.75, 0.95):
        key = f"q{round(q * 100):02d}"
        assert exact[key] == pytest.approx(float(torch.quantile(allv, q)), abs=1e-12)
        assert abs(streamed[key] - exact[key]) <= fine_bin


def test_temperature_stats_of_real_cswt_temperatures_and_degenerate_range():
    temps = losses.cswt_temperatures(*_batches(seed=7, sizes=(64,))[0][:2])
    stats = temperature_stats(temps)
    assert stats["min"] == pytest.approx(2.0) and stats["max"] == pytest.approx(6.0)
    assert int(stats["histogram"].sum()) == 64 and stats["histogram"].shape == (12,)
    flat = temperature_stats(torch.full((4,), 3.0), 3.0, 3.0, bins=3)
    assert flat["q50"] == 3.0 and flat["std"] == 0.0 and flat["histogram"].tolist() == [4, 0, 0]
    with pytest.raises(ValueError, match="empty"):
        temperature_stats(torch.zeros(0))


# ----------------------------------------------------------------------------- agreement


def test_agreement_accumulated_equals_at_once():
    batches = _batches(seed=8)
    metric = Agreement()
    for s, t, y in batches:
        metric.update(s, t, y)
    all_s, all_t, all_y = (_cat(batches, i) for i in range(3))
    assert metric.compute() == agreement(all_s, all_t, all_y)
    assert metric.compute()["agreement"] == pytest.approx(ref.top1_agreement(all_s, all_t))
    without = Agreement()
    without.update(all_s, all_t)
    assert set(without.compute()) == {"agreement"}


def test_metric_states_are_registered_for_device_moves_and_sync():
    for metric in (PerClassCosine(4), TemperatureStats(), Agreement()):
        assert metric._defaults, type(metric).__name__
        assert metric.to("cpu") is metric


# ----------------------------------------------------------------------------- the Monitor's host path


def test_monitor_step_summary_equals_the_functional_twins():
    from cskd_viz.monitor import Monitor

    s, t, y = _batches(seed=9, sizes=(33,))[0]
    temps = losses.cswt_temperatures(s, t)
    monitor = Monitor(None, 6, temperature=2.5)
    monitor.log_step(1, s.float(), t.float(), y, losses=1.0, temperatures=temps)
    record = monitor.latest_record()
    np.testing.assert_allclose(record.class_cosine, class_cosine(s.float(), t.float(), 2.5).numpy(), rtol=1e-12)
    exact = temperature_stats(temps)
    for key, value in record.temperature_stats.items():
        assert value == pytest.approx(exact[key], rel=1e-12), key
    assert [count for _, _, count in record.temperature_hist] == exact["histogram"].tolist()
    assert record.metrics["agreement"] == agreement(s, t, y)["agreement"]
    assert record.metrics["train_accuracy"] == agreement(s, t, y)["student_accuracy"]


# ----------------------------------------------------------------------------- 2 gloo processes


def _shards(rank: int):
    """Rank ``r``'s batches of one seeded dataset (unequal shard sizes on purpose)."""
    batches = _batches(seed=10, sizes=(8, 8, 8, 5, 7, 3))
    return batches[rank::WORLD], batches


def _compute(batches) -> dict:
    cosine, stats, agree = PerClassCosine(6, 3.0), TemperatureStats(), Agreement()
    for s, t, y in batches:
        cosine.update(s, t)
        stats.update(losses.cswt_temperatures(s, t))
        agree.update(s, t, y)
    temp = stats.compute()
    return {
        "cosine": cosine.compute().tolist(),
        "temperatures": {k: v.tolist() if isinstance(v, torch.Tensor) else v for k, v in temp.items()},
        "agreement": agree.compute(),
    }


def _worker(rank: int, port: int, path: str, run_dir: str) -> None:
    import torch.distributed as dist

    from cskd_viz.monitor import Monitor

    torch.set_num_threads(1)
    result: dict = {}
    try:
        dist.init_process_group(
            "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD, timeout=timedelta(seconds=60)
        )
        mine, _ = _shards(rank)
        result["synced"] = _compute(mine)
        monitor = Monitor(run_dir, 6, temperature=3.0, log_every=1, group=dist.group.WORLD)
        s, t, y = mine[0]
        monitor.log_step(1, s, t, y, losses={"ce": 1.0 + rank})
        result["step"] = monitor.latest_record().metrics
        for s, t, y in mine:
            monitor.eval_update(s, t, y)
        result["eval"] = monitor.log_eval(0).metrics
        monitor.close()
        result["wrote"] = (Path(run_dir) / "config.json").is_file()
    except Exception:  # reported to the parent, which fails the test with it
        result["error"] = traceback.format_exc()
    finally:
        Path(path).write_text(json.dumps(result))
        if dist.is_initialized():
            dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.distributed
@pytest.mark.timeout(150)
def test_synced_metrics_and_monitor_equal_one_process_on_the_concatenated_data(tmp_path):
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, str(rank), str(port), str(tmp_path / f"rank{rank}.json"), str(tmp_path / "run")],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in range(WORLD)
    ]
    try:
        logs = [proc.communicate(timeout=_DEADLINE_S)[0] for proc in procs]
    except subprocess.TimeoutExpired:
        for proc in procs:
            proc.kill()
        pytest.fail(f"the {WORLD} gloo processes did not finish within {_DEADLINE_S} s")
    results = []
    for rank, log in enumerate(logs):
        file = tmp_path / f"rank{rank}.json"
        assert file.exists(), f"rank {rank} wrote no result; output:\n{log}"
        result = json.loads(file.read_text())
        assert "error" not in result, f"rank {rank} failed:\n{result['error']}"
        results.append(result)
    _, everything = _shards(0)
    single = _compute(everything)
    for r in results:  # every rank sees the global values
        np.testing.assert_allclose(r["synced"]["cosine"], single["cosine"], rtol=1e-12)
        assert r["synced"]["agreement"] == pytest.approx(single["agreement"], rel=1e-12)
        for key in ("count", "min", "max", "histogram"):
            assert r["synced"]["temperatures"][key] == single["temperatures"][key], key
        assert r["synced"]["temperatures"]["mean"] == pytest.approx(single["temperatures"]["mean"], rel=1e-12)
    # Monitor under the group: step losses averaged over the ranks' samples, evals over all data
    n0, n1 = (_shards(r)[0][0][0].shape[0] for r in range(WORLD))
    assert results[0]["step"]["loss_ce"] == pytest.approx((1.0 * n0 + 2.0 * n1) / (n0 + n1))
    all_s, all_t, all_y = (_cat(everything, i) for i in range(3))
    expected = agreement(all_s, all_t, all_y)
    for r in results:
        assert r["eval"]["accuracy"] == pytest.approx(expected["student_accuracy"])
        assert r["eval"]["agreement"] == pytest.approx(expected["agreement"])
        expected_d = 1.0 - float(class_cosine(all_s, all_t, 3.0).mean())
        assert r["eval"]["cosine_distance"] == pytest.approx(expected_d, rel=1e-9)
    assert results[0]["wrote"]
    from cskd_viz.runs import load_run

    log = load_run(tmp_path / "run")
    assert log.status == "finished" and len(log.evals) == 1 and len(log.steps) == 1


if __name__ == "__main__":
    _worker(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4])
