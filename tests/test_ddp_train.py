"""The trainer under ``torchrun``: 2 gloo processes on this machine run ``cskd-viz train`` on digits.

Two launches, shared by the distributed tests (module fixture), each bounded in time (the whole
process group of the launcher is killed after ``_DEADLINE_S``):

- global-batch CSKD+CSWT with an auto-trained teacher (the teacher run is trained with DDP too);
- local-batch CSKD+CSWT from the first launch's teacher checkpoint, launched like the docs say
  (``torchrun --no-python cskd-viz train ...``) when the venv has the ``cskd-viz`` script.

Both must write exactly one run log per run (rank 0 only), and their first logged step must match
a single-process computation on the two ranks' first batches: the global-batch loss equals the
loss of the concatenated batch, the local one the mean of the per-rank losses. The single-process
helpers (``shard_loader``, ``distributed_session``, the ``--global-batch`` warning) are tested
in-process.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset
from torchrun_launch import torchrun

from cskd_viz.runs import is_run_dir, load_run
from cskd_viz.train import RunConfig, distributed_session, shard_loader

WORLD = 2
BATCH = 16  # per process
STEPS = 4
_DEADLINE_S = 150

COMMON = [
    "--dataset", "digits", "--student", "mlp_small", "--teacher", "mlp_large", "--method", "cskd_cswt",
    "--max-steps", str(STEPS), "--batch-size", str(BATCH), "--log-every", "2", "--seed", "0", "--no-progress",
]  # fmt: skip


def _launch(tmp: Path, args: list[str], *, script: bool = False) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node=2`` of ``cskd-viz train``, killed after ``_DEADLINE_S``."""
    entry = Path(sys.executable).with_name("cskd-viz")
    if script and entry.is_file():
        target = ["--no-python", str(entry), "train", *args]
    else:
        target = ["-m", "cskd_viz.cli", "train", *args]
    return torchrun(target, cwd=tmp, nproc=WORLD, deadline_s=_DEADLINE_S)


def _run_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir())


@pytest.fixture(scope="module")
def launches(tmp_path_factory):
    """Both 2-process runs: ``{"global": (runs dir, output), "local": (runs dir, output)}``."""
    tmp = tmp_path_factory.mktemp("ddp")
    first = _launch(tmp, [*COMMON, "--runs-dir", "runs_global", "--teacher-epochs", "1", "--global-batch"])
    assert first.returncode == 0, first.stdout[-4000:]
    teachers = [p for p in _run_dirs(tmp / "runs_global") if p.name.startswith("teacher-")]
    assert len(teachers) == 1, _run_dirs(tmp / "runs_global")
    checkpoint = teachers[0] / "model.pt"
    second = _launch(tmp, [*COMMON, "--runs-dir", "runs_local", "--teacher-checkpoint", str(checkpoint)], script=True)
    assert second.returncode == 0, second.stdout[-4000:]
    return {
        "global": (tmp / "runs_global", first.stdout),
        "local": (tmp / "runs_local", second.stdout),
        "teacher": checkpoint,
    }


@pytest.mark.distributed
@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("mode", ["global", "local"])
def test_two_process_train_writes_one_run_log(launches, mode):
    runs, output = launches[mode]
    students = [p for p in _run_dirs(runs) if not p.name.startswith("teacher-")]
    assert [p.name for p in students] == ["cskd_cswt-mlp_small-digits-s0"], output[-2000:]  # no "-2": one writer
    assert output.count("run log:") == 1 and "status: finished" in output  # rank 0 prints
    log = load_run(students[0])
    assert log.status == "finished" and log.progress["step"] == STEPS
    assert log.config["world_size"] == WORLD and log.config["global_batch"] is (mode == "global")
    assert log.config["batch_size"] == BATCH and log.config["teacher_cache"] is True
    assert list(log.steps["step"]) == [1, 2, 4] and len(log.evals) == 1
    assert (students[0] / "model.pt").is_file()
    if mode == "global":  # the auto-teacher was trained under DDP too, and written once
        teachers = [p for p in _run_dirs(runs) if p.name.startswith("teacher-")]
        assert len(teachers) == 1 and load_run(teachers[0]).status == "finished"
        assert load_run(teachers[0]).config["world_size"] == WORLD
    else:
        assert len(_run_dirs(runs)) == 1
    # Rank 0 evaluates the whole test set, not a shard: the accuracy is a multiple of 1/len(test).
    from cskd_viz.data import load_datasets

    n_test = len(load_datasets("digits", seed=0)[1])
    correct = log.evals["accuracy"].iloc[0] * n_test
    assert abs(correct - round(correct)) < 1e-6


def _first_batches():
    """What each rank's first step sees: (student logits, teacher logits, targets) per rank."""
    from cskd_viz.data import load_datasets
    from cskd_viz.models import get_model

    train, _, info = load_datasets("digits", seed=0)
    loader = DataLoader(train, batch_size=BATCH, shuffle=True)
    torch.manual_seed(0)  # run_experiment seeds the student's initialisation with the run's seed
    student = get_model("mlp_small", info.num_classes, info.input_shape)
    batches = []
    for rank in range(WORLD):
        shard = shard_loader(loader, num_replicas=WORLD, rank=rank, seed=0)
        shard.sampler.set_epoch(0)
        batches.append(next(iter(shard)))
    return student, batches


@pytest.mark.distributed
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_first_step_loss_matches_a_single_process(launches):
    from cskd_viz.methods import get_method
    from cskd_viz.models import get_model
    from cskd_viz.train import load_checkpoint

    teacher = load_checkpoint(get_model("mlp_large", 10, (1, 8, 8)), launches["teacher"]).eval()
    student, batches = _first_batches()
    method = get_method("cskd_cswt")
    with torch.no_grad():
        per_rank = [method(student(x), teacher(x), y) for x, y in batches]
        x = torch.cat([b[0] for b in batches])
        y = torch.cat([b[1] for b in batches])
        whole = method(student(x), teacher(x), y)
    name = "cskd_cswt-mlp_small-digits-s0"
    logged = {mode: load_run(launches[mode][0] / name).steps.iloc[0] for mode in ("global", "local")}
    ce = float(whole["loss_ce"])  # the mean over ranks of equal-sized batches is the global mean
    global_cskd = float(whole["loss_cskd"])
    local_cskd = sum(float(t["loss_cskd"]) for t in per_rank) / WORLD
    for mode in ("global", "local"):
        assert logged[mode]["loss_ce"] == pytest.approx(ce, rel=1e-5)
    assert logged["global"]["loss_cskd"] == pytest.approx(global_cskd, rel=1e-4)
    assert logged["local"]["loss_cskd"] == pytest.approx(local_cskd, rel=1e-4)
    assert abs(global_cskd - local_cskd) > 1e-3 * abs(global_cskd)  # the two modes really differ here
    assert logged["global"]["loss"] == pytest.approx(ce + global_cskd, rel=1e-5)


# ----------------------------------------------------------------------------- single process


def _loader(n: int = 10, batch_size: int = 2, shuffle: bool = True) -> DataLoader:
    data = TensorDataset(torch.arange(float(n)), torch.zeros(n, dtype=torch.long))
    return DataLoader(data, batch_size=batch_size, shuffle=shuffle)


def test_shard_loader_gives_disjoint_equal_shards_that_reshuffle():
    shards = [shard_loader(_loader(11), num_replicas=WORLD, rank=r, seed=3) for r in range(WORLD)]
    assert [len(s) for s in shards] == [3, 3]  # 5 samples each (one dropped), batches 2, 2, 1
    epochs = []
    for epoch in range(2):
        seen = []
        for shard in shards:
            shard.sampler.set_epoch(epoch)
            sizes = [len(x) for x, _ in shard]
            assert sizes == [2, 2, 1]  # the same batch sizes on every rank
            seen.append([int(v) for x, _ in shard for v in x])
        assert not set(seen[0]) & set(seen[1]) and len(seen[0] + seen[1]) == 10
        epochs.append(seen)
    assert epochs[0] != epochs[1]


def test_shard_loader_keeps_order_and_settings():
    ordered = shard_loader(_loader(6, shuffle=False), num_replicas=WORLD, rank=1)
    assert [int(v) for x, _ in ordered for v in x] == [1, 3, 5]
    sharded = shard_loader(_loader(), num_replicas=WORLD, rank=0)
    assert shard_loader(sharded) is sharded  # already distributed: unchanged
    whole = shard_loader(_loader(7))  # outside torch.distributed: one shard with everything
    assert sorted(int(v) for x, _ in whole for v in x) == list(range(7))
    data = TensorDataset(torch.zeros(9), torch.zeros(9, dtype=torch.long))
    dropping = DataLoader(data, batch_size=2, shuffle=True, drop_last=True)
    assert len(shard_loader(dropping, num_replicas=WORLD, rank=0)) == 2  # 4 samples: 2 full batches
    tiny = DataLoader(data, batch_size=8, shuffle=True, drop_last=True)
    assert len(shard_loader(tiny, num_replicas=WORLD, rank=0)) == 1  # 4 < 8: the partial batch stays


def test_shard_loader_rejects_what_it_cannot_shard():
    data = TensorDataset(torch.zeros(4), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="batch_sampler"):
        shard_loader(DataLoader(data, batch_sampler=[[0, 1], [2, 3]]))
    weighted = torch.utils.data.WeightedRandomSampler([1.0] * 4, 4)
    with pytest.raises(ValueError, match="WeightedRandomSampler"):
        shard_loader(DataLoader(data, sampler=weighted))
    with pytest.raises(ValueError, match="rank"):
        shard_loader(_loader(), num_replicas=2, rank=2)
    with pytest.raises(ValueError, match="num_replicas"):
        shard_loader(_loader(), num_replicas=0, rank=0)
    with pytest.raises(TypeError, match="loader"):
        shard_loader([1, 2])  # type: ignore[arg-type]


def test_distributed_session_is_a_no_op_in_one_process(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with distributed_session("cpu") as world:
        assert world == 1 and not torch.distributed.is_initialized()
    monkeypatch.setenv("WORLD_SIZE", "1")
    with distributed_session("cpu") as world:
        assert world == 1


def test_distributed_session_names_missing_torchrun_variables(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    for name in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(RuntimeError, match="RANK, MASTER_ADDR, MASTER_PORT is not set: launch with torchrun"):
        with distributed_session("cpu"):
            pass
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="WORLD_SIZE"):
        with distributed_session("cpu"):
            pass


def test_global_batch_flag_in_one_process_warns_and_trains(tmp_path, capsys, monkeypatch):
    from cskd_viz.cli import main
    from cskd_viz.models import get_model
    from cskd_viz.train import save_checkpoint

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    save_checkpoint(get_model("mlp_large", 10, (1, 8, 8)), tmp_path / "teacher.pt")
    args = ["train", *COMMON, "--max-steps", "2", "--runs-dir", str(tmp_path / "runs"), "--global-batch"]
    args += ["--teacher-checkpoint", str(tmp_path / "teacher.pt"), "--name", "one"]
    with pytest.warns(UserWarning, match="no effect in a single process"):
        assert main(args) == 0
    log = load_run(tmp_path / "runs" / "one")
    assert log.status == "finished" and log.config["global_batch"] is True and log.config["world_size"] == 1
    assert [p.name for p in (tmp_path / "runs").iterdir() if is_run_dir(p)] == ["one"]


def test_run_config_global_batch():
    assert RunConfig(global_batch=True).to_dict()["global_batch"] is True
    assert RunConfig(global_batch=True).teacher_config().global_batch is False  # a CE teacher: no batch loss
    with pytest.raises(TypeError, match="global_batch"):
        RunConfig(global_batch="yes")  # type: ignore[arg-type]


@pytest.mark.parametrize("workers", [0, 1])
def test_shard_loader_gives_each_rank_its_own_augmentation_stream(workers):
    """Same seeds on every rank must not mean the same crops and flips at each batch position."""
    from cskd_viz.data import CifarDataset
    from cskd_viz.views import two_view_dataset

    pattern = torch.arange(3 * 32 * 32, dtype=torch.int64).remainder(251).to(torch.uint8).view(1, 3, 32, 32)
    images, targets = pattern.repeat(8, 1, 1, 1), torch.zeros(8, dtype=torch.long)  # identical images
    cifar = CifarDataset(images, targets, (0.5,) * 3, (0.25,) * 3, augment=True, seed=3)
    for dataset in (cifar, two_view_dataset(cifar, seed=3)):
        loader = DataLoader(dataset, batch_size=4, shuffle=True, num_workers=workers,
                            generator=torch.Generator().manual_seed(0))  # fmt: skip
        shards = [shard_loader(loader, num_replicas=WORLD, rank=r) for r in range(WORLD)]
        assert shards[0].dataset is dataset and shards[1].dataset is not dataset  # rank 0 keeps its stream
        first = [next(iter(shard))[0] for shard in shards]
        assert not torch.equal(first[0], first[1])  # the images are equal: only the augmentation differs
        again = next(iter(shard_loader(loader, num_replicas=WORLD, rank=1)))[0]
        assert torch.equal(again, first[1])  # and rank 1's stream is seeded: the same every time
