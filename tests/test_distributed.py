"""Global-batch CSKD on 2 gloo processes equals single-process CSKD on the concatenated batch.

One test spawns 2 CPU processes (this file run as a script, rendezvous on 127.0.0.1) that run every
check and write their measurements as JSON; the parent asserts. Bounded in time: the processes are
killed after ``_DEADLINE_S``. The single-process helpers are tested in-process.
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

import pytest
import torch

from cskd_viz import distributed

WORLD = 2
B, C, D = 5, 4, 3  # local batch, classes, input features of the tiny linear student
_DEADLINE_S = 100
TOL = 1e-10


# ----------------------------------------------------------------------------- worker (runs in each rank)


def _data() -> dict[str, torch.Tensor]:
    """The global batch, identical on every rank (seeded), float64."""
    g = torch.Generator().manual_seed(0)
    n = WORLD * B
    x = torch.randn(n, D, generator=g, dtype=torch.float64)
    y = torch.randint(0, C, (n,), generator=g)
    teacher = 3.0 * torch.randn(n, C, generator=g, dtype=torch.float64)
    student = torch.randn(n, C, generator=g, dtype=torch.float64)
    # Rank 0 holds the most similar sample, rank 1 the least similar one, so each rank's local CSWT
    # range misses one end of the global range.
    student[0] = teacher[0]
    student[B] = -teacher[B]
    temperature = 1.0 + 4.0 * torch.rand(n, generator=g, dtype=torch.float64)
    return {"x": x, "y": y, "teacher": teacher, "student": student, "temperature": temperature}


def _maxdiff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.detach() - b.detach()).abs().max())


def _grad_of(fn, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    z = z.detach().clone().requires_grad_(True)
    value = fn(z)
    value.backward()
    return value.detach(), z.grad


def _tiny_model() -> torch.nn.Module:
    torch.manual_seed(1)
    return torch.nn.Linear(D, C).double()


def _checks(rank: int) -> dict:
    import torch.distributed as dist
    import torch.nn.functional as F
    from torch.nn.parallel import DistributedDataParallel as DDP

    from cskd_viz import losses

    group = dist.group.WORLD
    data = _data()
    rows = slice(rank * B, (rank + 1) * B)
    z, t, temp = data["student"], data["teacher"], data["temperature"]
    out: dict = {
        "is_distributed": distributed.is_distributed(),
        "rank": distributed.get_rank(),
        "world": distributed.get_world_size(),
        "main": distributed.is_main_process(),
        "default_group_is_world": distributed.default_group() is group,
        "global_batch_size": distributed.global_batch_size(B, group),
    }

    # 1. loss values and logit gradients: global == single process; per-rank grad == N * slice of it.
    cases = {
        "cskd_cswt": lambda s, tt, tmp, g: losses.cskd_loss(s, tt, group=g),
        "cskd_plain": lambda s, tt, tmp, g: losses.cskd_loss(s, tt, temperature=3.0, cswt=False, group=g),
        "bcd_float": lambda s, tt, tmp, g: losses.batch_cosine_distance(s, tt, 2.5, group=g),
        "bcd_tensor": lambda s, tt, tmp, g: losses.batch_cosine_distance(s, tt, tmp, group=g),
    }
    for name, fn in cases.items():
        ref_value, ref_grad = _grad_of(lambda s, fn=fn: fn(s, t, temp, None), z)
        value, grad = _grad_of(lambda s, fn=fn: fn(s, t[rows], temp[rows], group), z[rows])
        local_value = fn(z[rows], t[rows], temp[rows], None)
        out[name] = {
            "value": _maxdiff(value, ref_value),
            "grad_times_n": _maxdiff(grad, WORLD * ref_grad[rows]),
            "grad_scale": float(grad.abs().max() / ref_grad[rows].abs().max()),
            "local_vs_global": _maxdiff(local_value, ref_value),
        }

    # 2. CSWT temperatures: this rank's slice of the single-process temperatures.
    ref_temps = losses.cswt_temperatures(z, t)
    out["cswt"] = {
        "global": _maxdiff(losses.cswt_temperatures(z[rows], t[rows], group=group), ref_temps[rows]),
        "local_vs_global": _maxdiff(losses.cswt_temperatures(z[rows], t[rows]), ref_temps[rows]),
        "requires_grad": losses.cswt_temperatures(z[rows].clone().requires_grad_(), t[rows], group=group).requires_grad,
    }

    # 3. DDP: the averaged parameter gradient of w_ce * CE(local) + w_kd * CSKD(global) equals the
    #    single-process gradient on the concatenated batch; with local CSKD it does not.
    x, y = data["x"], data["y"]
    reference = _tiny_model()
    logits = reference(x)
    (0.5 * F.cross_entropy(logits, y) + 2.0 * losses.cskd_loss(logits, t)).backward()
    ref_params = {n: p.grad.clone() for n, p in reference.named_parameters()}
    for mode, g in (("ddp_global", group), ("ddp_local", None)):
        model = DDP(_tiny_model())
        logits = model(x[rows])
        loss = 0.5 * F.cross_entropy(logits, y[rows]) + 2.0 * losses.cskd_loss(logits, t[rows], group=g)
        loss.backward()
        out[mode] = {n: _maxdiff(p.grad, ref_params[n]) for n, p in model.module.named_parameters()}

    # 4. gather_rows on its own, with a different loss on each rank: grad = sum over ranks.
    weights = torch.arange(WORLD * B * 2, dtype=torch.float64).reshape(WORLD * B, 2)
    local = z[rows, :2].clone().requires_grad_(True)
    gathered = distributed.gather_rows(local, group)
    ((rank + 1) * weights * gathered).sum().backward()
    expected = sum(r + 1 for r in range(WORLD)) * weights[rows]
    out["gather"] = {"forward": _maxdiff(gathered, z[:, :2]), "backward": _maxdiff(local.grad, expected)}
    grads = {}
    for flag in (True, False):  # the same loss on every rank: N * local gradient == all-reduced sum
        local = z[rows, :2].clone().requires_grad_(True)
        (weights * distributed.gather_rows(local, group, reduce_grad=flag)).pow(2).sum().backward()
        grads[flag] = local.grad
    out["gather"]["no_reduce"] = _maxdiff(grads[True], grads[False])
    student = z[rows].clone().requires_grad_(True)
    g_s, g_t, g_temp, g_float = distributed.gather_batch(student, t[rows], temp[rows].float(), 2.0, group=group)
    out["gather_batch"] = {
        "values": max(_maxdiff(g_s, z), _maxdiff(g_t, t), _maxdiff(g_temp, temp.float().double())),
        "shapes": [list(g_s.shape), list(g_t.shape), list(g_temp.shape)],
        "dtype": str(g_temp.dtype),
        "grad_flags": [g_s.requires_grad, g_t.requires_grad],
        "float": g_float,
        "local_rows": _maxdiff(distributed.local_rows(g_s, group), z[rows]),
    }
    out["reduce"] = {
        "max": _maxdiff(distributed.all_reduce_max(torch.tensor([rank, -rank]), group), torch.tensor([1, 0])),
        "mean": _maxdiff(distributed.all_reduce_mean(torch.tensor(float(rank)), group), torch.tensor(0.5)),
    }

    # 5. gather_batch's header protocol over a sequence of calls: first call (capacity agreed),
    #    same size, smaller batches, a mismatch (ValueError everywhere), then larger batches.
    sequence = []
    for size in (B, B, 3, "mismatch", 2, 2 * B, 2 * B, B):
        if size == "mismatch":
            try:
                distributed.gather_batch(z[: 3 + rank], group=group)
                sequence.append("no error")
            except ValueError as error:
                sequence.append(str(error)[:60])
            continue
        local = torch.arange(size * C, dtype=torch.float64).reshape(size, C) + 1000.0 * rank
        (gathered,) = distributed.gather_batch(local, group=group)
        expected = torch.cat(
            [torch.arange(size * C, dtype=torch.float64).reshape(size, C) + 1000.0 * r for r in range(WORLD)]
        )
        sequence.append(list(gathered.shape) == [WORLD * size, C] and bool((gathered == expected).all()))
    out["sequence"] = sequence

    # 6. unequal local batch sizes: a clear ValueError on every rank, no hang.
    size = 3 + rank
    for name, call in {
        "unequal_cskd": lambda: losses.cskd_loss(z[:size], t[:size], group=group),
        "unequal_size": lambda: distributed.global_batch_size(size, group),
        "unequal_cswt": lambda: losses.cswt_temperatures(z[:size], t[:size], group=group),
        "unequal_classes": lambda: losses.batch_cosine_distance(z[:, :size], t[:, :size], 2.0, group=group),
    }.items():
        try:
            call()
            out[name] = "no error"
        except ValueError as error:
            out[name] = str(error)
    return out


def _worker(rank: int, port: int, path: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    result: dict = {}
    try:
        dist.init_process_group(
            "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD, timeout=timedelta(seconds=60)
        )
        result = _checks(rank)
    except Exception:  # reported to the parent, which fails the test with it
        result["error"] = traceback.format_exc()
    finally:
        Path(path).write_text(json.dumps(result))
        if dist.is_initialized():
            dist.destroy_process_group()


# ----------------------------------------------------------------------------- the tests (parent)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> list[dict]:
    """Run every check on 2 gloo processes; the JSON result of each rank."""
    tmp = tmp_path_factory.mktemp("distributed")
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, str(rank), str(port), str(tmp / f"rank{rank}.json")],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in range(WORLD)
    ]
    logs = []
    try:
        for proc in procs:
            logs.append(proc.communicate(timeout=_DEADLINE_S)[0])
    except subprocess.TimeoutExpired:
        for proc in procs:
            proc.kill()
        pytest.fail(f"the {WORLD} gloo processes did not finish within {_DEADLINE_S} s")
    results = []
    for rank, log in enumerate(logs):
        file = tmp / f"rank{rank}.json"
        assert file.exists(), f"rank {rank} wrote no result; output:\n{log}"
        result = json.loads(file.read_text())
        assert "error" not in result, f"rank {rank} failed:\n{result['error']}"
        results.append(result)
    return results


@pytest.mark.distributed
@pytest.mark.timeout(120)
def test_helpers_inside_the_group(two_ranks):
    for rank, r in enumerate(two_ranks):
        assert r["is_distributed"] and r["rank"] == rank and r["world"] == WORLD
        assert r["main"] == (rank == 0)
        assert r["default_group_is_world"]
        assert r["global_batch_size"] == WORLD * B


@pytest.mark.distributed
@pytest.mark.timeout(120)
@pytest.mark.parametrize("case", ["cskd_cswt", "cskd_plain", "bcd_float", "bcd_tensor"])
def test_global_loss_and_logit_gradient_match_single_process(two_ranks, case):
    for r in two_ranks:
        m = r[case]
        assert m["value"] < TOL, "global-batch loss != single-process loss on the concatenated batch"
        # Each rank's logit gradient is N times its slice of the single-process gradient; DDP's
        # 1/N average of parameter gradients brings it back (checked in the DDP test).
        assert m["grad_times_n"] < TOL
        assert m["grad_scale"] == pytest.approx(WORLD, rel=1e-9)
        assert m["local_vs_global"] > 1e-4, "local mode should see only the local slice"


@pytest.mark.distributed
@pytest.mark.timeout(120)
def test_cswt_temperatures_on_the_global_batch(two_ranks):
    for r in two_ranks:
        assert r["cswt"]["global"] < TOL
        assert r["cswt"]["local_vs_global"] > 1e-3
        assert r["cswt"]["requires_grad"] is False


@pytest.mark.distributed
@pytest.mark.timeout(120)
def test_ddp_averaged_parameter_gradient_equals_single_process(two_ranks):
    for r in two_ranks:
        assert max(r["ddp_global"].values()) < TOL, r["ddp_global"]
        assert max(r["ddp_local"].values()) > 1e-6, "local CSKD should give a different gradient"


@pytest.mark.distributed
@pytest.mark.timeout(120)
def test_gather_rows_and_reductions(two_ranks):
    for r in two_ranks:
        assert r["gather"]["forward"] == 0.0
        assert r["gather"]["backward"] < TOL, "gather_rows backward must sum the gradients of all ranks"
        assert r["gather"]["no_reduce"] < TOL
        gb = r["gather_batch"]
        assert gb["values"] == 0.0 and gb["local_rows"] == 0.0
        assert gb["shapes"] == [[WORLD * B, C], [WORLD * B, C], [WORLD * B]]
        assert gb["dtype"] == "torch.float64" and gb["grad_flags"] == [True, False] and gb["float"] == 2.0
        assert r["reduce"]["max"] == 0.0 and r["reduce"]["mean"] < TOL


@pytest.mark.distributed
@pytest.mark.timeout(120)
def test_gather_batch_header_protocol_over_changing_batch_sizes(two_ranks):
    for r in two_ranks:
        assert r["sequence"][:3] == [True, True, True]
        assert r["sequence"][3].startswith("global-batch CSKD needs the same local batch size")
        assert r["sequence"][4:] == [True, True, True, True]


@pytest.mark.distributed
@pytest.mark.timeout(120)
def test_unequal_local_batch_sizes_raise_on_every_rank(two_ranks):
    for r in two_ranks:
        assert "same local batch size on every rank, got rank 0: 3, rank 1: 4" in r["unequal_cskd"]
        assert "drop_last=True" in r["unequal_cskd"]
        assert "same local batch size on every rank, got rank 0: 3, rank 1: 4" in r["unequal_size"]
        assert "same local batch size on every rank, got rank 0: 3, rank 1: 4" in r["unequal_cswt"]
        assert "same number of columns (classes) on every rank" in r["unequal_classes"]


# ----------------------------------------------------------------------------- single process


def test_helpers_outside_torch_distributed():
    assert not distributed.is_distributed()
    assert distributed.get_rank() == 0 and distributed.get_world_size() == 1
    assert distributed.is_main_process() and distributed.default_group() is None
    assert distributed.global_batch_size(7) == 7


def test_global_batch_size_rejects_bad_sizes():
    with pytest.raises(ValueError, match="local_batch_size"):
        distributed.global_batch_size(0)
    with pytest.raises(ValueError, match="local_batch_size"):
        distributed.global_batch_size(2.5)  # type: ignore[arg-type]


def test_group_without_init_is_a_clear_error():
    from cskd_viz import losses

    z = torch.randn(4, 3)
    with pytest.raises(RuntimeError, match="not initialised"):
        losses.cskd_loss(z, z, group=object())
    with pytest.raises(RuntimeError, match="not initialised"):
        distributed.gather_rows(z, object())


def test_local_mode_is_the_default():
    import inspect

    from cskd_viz import losses

    for fn in (losses.cskd_loss, losses.batch_cosine_distance, losses.cswt_temperatures):
        assert inspect.signature(fn).parameters["group"].default is None


# ----------------------------------------------------------------------------- torchrun's environment (issue #14)

TORCHRUN = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK")


@pytest.fixture
def torchrun_env(monkeypatch):
    """Set the torchrun variables given (the others unset)."""

    def setenv(**values: str) -> None:
        for name in TORCHRUN:
            monkeypatch.delenv(name, raising=False)
        for name, value in values.items():
            monkeypatch.setenv(name, value)

    return setenv


def test_world_size_alone_lists_what_was_seen_and_what_is_missing(torchrun_env):
    torchrun_env(WORLD_SIZE="2", MASTER_ADDR="10.0.0.1")
    with pytest.raises(distributed.DistributedEnvironmentError) as err:
        with distributed.distributed_session("cpu"):
            pass
    message = str(err.value)
    assert "WORLD_SIZE=2 but RANK, MASTER_PORT is not set" in message
    assert "seen: MASTER_ADDR=10.0.0.1, MASTER_PORT unset, WORLD_SIZE=2, RANK unset, LOCAL_RANK unset" in message
    assert isinstance(err.value, RuntimeError) and not torch.distributed.is_initialized()


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        (dict(RANK="2"), "RANK=2 is not an integer in [0, 1]"),
        (dict(RANK="zero"), "RANK=zero is not an integer"),
        (dict(MASTER_PORT="99999"), "MASTER_PORT=99999 is not an integer in [1, 65535]"),
        (dict(LOCAL_RANK="-1"), "LOCAL_RANK=-1 is not an integer"),
    ],
)
def test_malformed_torchrun_variables_are_named(torchrun_env, values, problem):
    full = dict(WORLD_SIZE="2", RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT="29500", LOCAL_RANK="0")
    torchrun_env(**{**full, **values})
    with pytest.raises(distributed.DistributedEnvironmentError, match="torchrun environment is malformed") as err:
        distributed.check_torchrun_environment()
    assert problem in str(err.value)


def test_one_process_needs_no_torchrun_variables(torchrun_env):
    torchrun_env()
    assert distributed.check_torchrun_environment() == 1
    torchrun_env(WORLD_SIZE="1", RANK="7")  # WORLD_SIZE=1: the rest is ignored
    with distributed.distributed_session("cpu", timeout_s=1) as world:
        assert world == 1


@pytest.mark.parametrize("timeout_s", [0, -3, float("nan"), float("inf"), True, "60"])
def test_session_timeout_must_be_a_positive_number(torchrun_env, timeout_s):
    torchrun_env()
    with pytest.raises(ValueError, match="timeout_s"):
        with distributed.distributed_session("cpu", timeout_s=timeout_s):
            pass


def test_the_short_timeout_bounds_the_rendezvous_only(torchrun_env):
    """After the rendezvous, collectives get torch's default back: rank 0 busy writing files for over a
    minute must not time the other ranks out."""
    import socket
    from datetime import timedelta

    from cskd_viz._torchrun import _init_process_group

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    torchrun_env(WORLD_SIZE="1", RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), LOCAL_RANK="0")
    _init_process_group("gloo", 3.0)
    try:
        backend = torch.distributed.distributed_c10d._get_default_group()._get_backend(torch.device("cpu"))
        assert backend.options._timeout == timedelta(minutes=30)
    finally:
        torch.distributed.destroy_process_group()


def test_session_timeout_defaults_to_60_seconds():
    import inspect

    assert inspect.signature(distributed.distributed_session).parameters["timeout_s"].default == 60


if __name__ == "__main__":
    _worker(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
