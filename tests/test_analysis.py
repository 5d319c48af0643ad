"""cskd_viz.analysis: predict_logits (and its cache), compare's frames against direct computations, figures, parquet."""

from __future__ import annotations

import collections
import math
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from cskd_viz import losses
from cskd_viz.analysis import DistillationReport, compare, comparison, predict_logits
from cskd_viz.analysis.predict import CACHE_FORMAT, _payload_digest, cache_key
from cskd_viz.metrics import class_cosine
from tests import reference as ref

T, T_LOW, T_HIGH = 3.0, 1.5, 5.0


@pytest.fixture(scope="module")
def case():
    """``N = 27`` samples, ``C = 5`` classes, two students, batches of 6 (4 batches, 3 samples dropped)."""
    g = torch.Generator().manual_seed(11)
    teacher = 2.5 * torch.randn(27, 5, generator=g)
    students = {"close": teacher + 0.7 * torch.randn(27, 5, generator=g), "far": 2.0 * torch.randn(27, 5, generator=g)}
    targets = torch.randint(0, 5, (27,), generator=g)
    names = ["ant", "bee", "cat", "dog", "eel"]
    report = compare(teacher, students, targets, class_names=names, temperature=T, t_low=T_LOW, t_high=T_HIGH,
                     batch_size=6, seed=3)  # fmt: skip
    batches = torch.randperm(27, generator=torch.Generator().manual_seed(3))[:24].view(4, 6)
    return teacher, students, targets, names, report, batches


def _rows(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    return frame[frame["student"] == name].reset_index(drop=True)


# ----------------------------------------------------------------------------- compare's frames


def test_per_class_cosines_match_float64_references(case):
    teacher, students, _, names, report, batches = case
    for name, student in students.items():
        rows = _rows(report.per_class, name)
        assert rows["class"].tolist() == list(range(5)) and rows["class_name"].tolist() == names
        np.testing.assert_allclose(rows["cosine_epoch"], ref.per_class_cosine(student, teacher, T), rtol=0, atol=1e-12)
        np.testing.assert_allclose(rows["cosine_epoch"], class_cosine(student, teacher, T), rtol=0, atol=1e-14)
        per_batch = [ref.per_class_cosine(student[b], teacher[b], T) for b in batches]
        np.testing.assert_allclose(rows["cosine_batch_mean"], np.mean(per_batch, axis=0), rtol=0, atol=1e-12)
        assert rows.loc[rows["cosine_epoch"].idxmin(), "rank"] == 1
        assert sorted(rows["rank"]) == [1, 2, 3, 4, 5]


def test_per_class_accuracy_and_summary_match_direct_computations(case):
    teacher, students, targets, _, report, _ = case
    y = targets.numpy()
    teacher_correct = teacher.argmax(1).numpy() == y
    for name, student in students.items():
        correct = student.argmax(1).numpy() == y
        rows = _rows(report.per_class, name)
        for j in range(5):
            mask = y == j
            assert rows.loc[j, "support"] == mask.sum()
            if mask.any():
                assert rows.loc[j, "student_accuracy"] == pytest.approx(correct[mask].mean(), abs=1e-15)
                assert rows.loc[j, "teacher_accuracy"] == pytest.approx(teacher_correct[mask].mean(), abs=1e-15)
        row = _rows(report.summary, name).iloc[0]
        assert row["accuracy"] == pytest.approx(correct.mean()) and row["teacher_accuracy"] == teacher_correct.mean()
        assert row["agreement"] == pytest.approx(ref.top1_agreement(student, teacher))
        assert row["cosine_distance"] == pytest.approx(ref.batch_cosine_distance(student, teacher, T), abs=1e-12)
        assert row["mean_kl"] == pytest.approx(ref.per_sample_kl(student, teacher, T).mean(), abs=1e-12)
        # the KL convention: kd_loss = T^2 * mean_kl
        assert row["mean_kl"] * T**2 == pytest.approx(float(losses.kd_loss(student.double(), teacher.double(), T)))
        gaps = rows["accuracy_gap"]
        assert (row["classes_better"], row["classes_worse"]) == ((gaps > 0).sum(), (gaps < 0).sum())
        assert row["cosine_distance_batch_mean"] == pytest.approx(1 - rows["cosine_batch_mean"].mean(), abs=1e-15)


def test_per_sample_frame_matches_references_in_the_seeded_batches(case):
    teacher, students, targets, _, report, batches = case
    dropped = sorted(set(range(27)) - set(batches.reshape(-1).tolist()))
    for name, student in students.items():
        rows = _rows(report.per_sample, name)
        assert rows["sample"].tolist() == list(range(27)) and rows["target"].tolist() == targets.tolist()
        np.testing.assert_allclose(rows["kl"], ref.per_sample_kl(student, teacher, T), rtol=0, atol=1e-12)
        expected = 1 - ref.per_sample_cosine(student, teacher, 1.0)
        np.testing.assert_allclose(rows["cosine_distance"], expected, rtol=0, atol=1e-12)
        assert rows["agree"].tolist() == (student.argmax(1) == teacher.argmax(1)).tolist()
        for b, index in enumerate(batches):
            in_batch = rows.loc[index.numpy()]
            assert (in_batch["batch"] == b).all()
            np.testing.assert_allclose(
                in_batch["cswt_temperature"], ref.cswt_temperatures(student[index], teacher[index], T_LOW, T_HIGH),
                rtol=0, atol=1e-12,
            )  # fmt: skip
            library = losses.cswt_temperatures(student[index].double(), teacher[index].double(), T_LOW, T_HIGH)
            np.testing.assert_array_equal(in_batch["cswt_temperature"], library.numpy())
        assert rows.loc[dropped, "cswt_temperature"].isna().all() and (rows.loc[dropped, "batch"] == -1).all()


def test_confusion_counts_differing_top1_pairs_with_names(case):
    teacher, students, _, names, report, _ = case
    for name, student in students.items():
        pairs = collections.Counter(
            (t, s) for t, s in zip(teacher.argmax(1).tolist(), student.argmax(1).tolist(), strict=True) if t != s
        )
        rows = _rows(report.confusion, name)
        got = {(r.teacher_class, r.student_class): r.count for r in rows.itertuples()}
        assert got == dict(pairs)
        assert rows["count"].is_monotonic_decreasing and rows["rank"].tolist() == list(range(1, len(rows) + 1))
        assert (rows["teacher_class_name"] == [names[j] for j in rows["teacher_class"]]).all()
        assert rows["fraction"].sum() == pytest.approx(1 - _rows(report.summary, name).loc[0, "agreement"])
    top = report.top_confusions(1)
    assert top["student"].tolist() == ["close", "far"] and (top["rank"] == 1).all()
    assert report.worst_classes(2)["rank"].tolist() == [1, 2, 1, 2]


def test_row_chunks_do_not_change_the_frames(case, monkeypatch):
    teacher, students, targets, names, report, _ = case
    monkeypatch.setattr(comparison, "_CHUNK_ENTRIES", 20)  # 4 rows per chunk, 1 batch per chunk: every loop runs
    chunked = compare(teacher, students, targets, class_names=names, temperature=T, t_low=T_LOW, t_high=T_HIGH,
                      batch_size=6, seed=3)  # fmt: skip
    for name in DistillationReport.FRAMES:
        pd.testing.assert_frame_equal(getattr(chunked, name), getattr(report, name), rtol=0, atol=1e-13)


def test_ece_against_a_hand_computation():
    probabilities = torch.tensor(
        [[0.9, 0.04, 0.03, 0.03], [0.9, 0.04, 0.03, 0.03], [0.62, 0.2, 0.1, 0.08], [0.31, 0.3, 0.2, 0.19]],
        dtype=torch.float64,
    )
    targets = torch.tensor([0, 1, 0, 2])
    # bins of width 1/15: 0.9 -> (13/15, 14/15] twice (accuracy 1/2), 0.62 -> (8/15, 9/15]... correct, 0.31 -> wrong
    ece = 2 / 4 * abs(0.5 - 0.9) + 1 / 4 * abs(1.0 - 0.62) + 1 / 4 * abs(0.0 - 0.31)
    teacher = torch.log(torch.tensor([[0.5, 0.2, 0.2, 0.1]] * 4, dtype=torch.float64))  # always class 0, conf 0.5
    teacher_ece = abs(0.5 - 0.5)  # one bin, accuracy 2/4
    report = compare(teacher, {"s": probabilities.log()}, targets, batch_size=2)
    row = report.summary.iloc[0]
    assert row["ece"] == pytest.approx(ece, abs=1e-12) and row["teacher_ece"] == pytest.approx(teacher_ece, abs=1e-12)
    bins = _rows(report.calibration.rename(columns={"model": "student"}), "s")
    assert bins.loc[13, "count"] == 2 and bins.loc[13, "accuracy"] == 0.5 and bins["count"].sum() == 4
    assert bins.loc[bins["count"] > 0, "bin"].tolist() == [4, 9, 13]


def test_identical_student_is_perfect():
    g = torch.Generator().manual_seed(0)
    teacher = torch.randn(20, 4, generator=g, dtype=torch.float64)
    report = compare(teacher, {"copy": teacher.clone()}, torch.arange(20) % 4, batch_size=5)
    row = report.summary.iloc[0]
    assert row["agreement"] == 1.0 and row["cosine_distance"] == 0.0 and row["mean_kl"] == 0.0
    assert row["classes_better"] == row["classes_worse"] == 0 and report.confusion.empty
    assert (report.per_sample["cswt_temperature"] == (2.0 + 6.0) / 2).all()  # no spread within any batch


# ----------------------------------------------------------------------------- bad input


def _bad_cases():
    g = torch.Generator().manual_seed(1)
    t, s, y = torch.randn(10, 3, generator=g), torch.randn(10, 3, generator=g), torch.arange(10) % 3
    nan = s.clone()
    nan[2, 1] = math.nan
    return [
        ((t, {"a": s[:9]}, y), {}, ValueError, r"students\['a'\] has shape \(9, 3\)"),
        ((t, {"a": torch.randn(10, 4)}, y), {}, ValueError, r"students\['a'\].*teacher's N samples and C classes"),
        ((t, {"a": nan}, y), {}, ValueError, r"students\['a'\] contains NaN"),
        ((nan, {"a": s}, y), {}, ValueError, "teacher_logits contains NaN"),
        ((t, {"a": s}, y + 1), {}, ValueError, r"targets must be class indices in \[0, 3\)"),
        ((t, {"a": s}, y[:9]), {}, ValueError, "targets must have shape"),
        ((t, {"a": s}, y), {"class_names": ["x", "y"]}, ValueError, "class_names has 2 names.*C=3"),
        ((t, {"a": s}, y), {"batch_size": 1}, ValueError, "batch_size needs at least 2"),
        ((t, {"a": s}, y), {"batch_size": 11}, ValueError, r"batch_size must be <= N=10"),
        ((t, {"a": s}, y), {"temperature": 0.0}, ValueError, "temperature must be > 0"),
        ((t, {"a": s}, y), {"temperature": 1e4}, ValueError, r"temperature must be in \[0.001, 1000\]"),
        ((t, {"a": s}, y), {"t_low": 7.0}, ValueError, "t_low must be <= t_high"),
        ((t, {}, y), {}, ValueError, "students is empty"),
        ((t, [s], y), {}, TypeError, "students must be a mapping"),
        ((t, {"teacher": s}, y), {}, ValueError, "students keys must be non-empty strings other than 'teacher'"),
    ]


@pytest.mark.parametrize("args, kwargs, error, match", _bad_cases())
def test_bad_input_names_the_argument(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        compare(*args, **kwargs)


# ----------------------------------------------------------------------------- figures and parquet


def test_figures_are_titled_and_labelled(case):
    import matplotlib.pyplot as plt

    report = case[4]
    figures = report.figures(k=2)
    try:
        assert list(figures) == ["class_cosine", "student_scatter", "kl_vs_cosine", "cswt_temperatures", "reliability"]
        for key, fig in figures.items():
            axes = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
            assert axes, key
            for ax in axes:
                assert ax.get_title() and ax.get_xlabel() and ax.get_ylabel(), key
        texts = " ".join(t.get_text() for t in figures["class_cosine"].axes[0].texts)
        worst = report.worst_classes(2)
        assert all(name in texts for name in worst.loc[worst["student"] == "close", "class_name"])
    finally:
        plt.close("all")
    single = compare(case[0], {"one": case[1]["close"]}, case[2], batch_size=6)
    try:
        assert "student_scatter" not in single.figures()
    finally:
        plt.close("all")


def test_parquet_round_trip(case, tmp_path):
    report = case[4]
    report.to_parquet(tmp_path / "report")
    back = DistillationReport.from_parquet(tmp_path / "report")
    for name in DistillationReport.FRAMES:
        pd.testing.assert_frame_equal(getattr(back, name), getattr(report, name))
    assert back.settings == report.settings and back.students == ["close", "far"]
    assert "close" in repr(back)
    with pytest.raises(FileNotFoundError, match="missing"):
        DistillationReport.from_parquet(tmp_path / "nowhere")


# ----------------------------------------------------------------------------- predict_logits and its cache


class Counting(nn.Module):
    """A small net with dropout (eval mode matters) that counts its forward calls."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.net = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 4))
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.net(x)


@pytest.fixture
def data():
    g = torch.Generator().manual_seed(5)
    return TensorDataset(torch.randn(50, 6, generator=g), torch.randint(0, 4, (50,), generator=g))


def test_predict_logits_runs_in_eval_mode_and_restores_the_model(data):
    model = Counting().train()
    logits, targets = predict_logits(model, data, batch_size=16, device="cpu", progress=False)
    assert model.training and model.calls == 4 and targets.dtype == torch.int64
    with torch.no_grad():
        expected = model.eval()(data.tensors[0])
    torch.testing.assert_close(logits, expected)
    assert torch.equal(targets, data.tensors[1]) and not logits.requires_grad


def test_cache_hit_skips_the_model(data, tmp_path):
    model = Counting()
    first = predict_logits(model, data, batch_size=16, device="cpu", cache=tmp_path, progress=False)
    calls = model.calls
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        second = predict_logits(model, data, batch_size=16, device="cpu", cache=tmp_path, progress=False)
    assert model.calls == calls and all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    assert [p.suffix for p in tmp_path.iterdir()] == [".pt"]  # no temporary file left behind
    with torch.no_grad():
        model.net[0].weight.add_(1.0)  # new weights: a new key, a new file
    predict_logits(model, data, cache=tmp_path, device="cpu", progress=False)
    assert model.calls > calls and len(list(tmp_path.iterdir())) == 2
    other = TensorDataset(data.tensors[0] + 1, data.tensors[1])  # same class and length, other samples
    assert cache_key(model, other) != cache_key(model, data)


def _cache_file(tmp_path):
    (path,) = tmp_path.glob("*.pt")
    return path


def _corrupt_truncated(path, model, data):
    path.write_bytes(path.read_bytes()[:100])


def _corrupt_other_model(path, model, data):
    other = Counting(seed=1)
    predict_logits(other, data, cache=path.parent / "other", device="cpu", progress=False)
    path.write_bytes(_cache_file(path.parent / "other").read_bytes())


def _corrupt_wrong_n(path, model, data):
    logits, targets = torch.zeros(49, 4), torch.zeros(49, dtype=torch.long)
    header = {"format": CACHE_FORMAT, "key": cache_key(model, data), "samples": 49, "classes": 4,
              "logits_dtype": "torch.float32", "digest": _payload_digest(logits, targets)}  # fmt: skip
    torch.save({"header": header, "logits": logits, "targets": targets}, path)


def _corrupt_payload(path, model, data):
    entry = torch.load(path, weights_only=True)
    entry["logits"][0, 0] += 1.0
    torch.save(entry, path)


@pytest.mark.parametrize(
    "corrupt, reason",
    [
        (_corrupt_truncated, "cannot be read"),
        (_corrupt_other_model, "another model or dataset"),
        (_corrupt_wrong_n, r"\(49, 4\) logits"),
        (_corrupt_payload, "does not match its digest"),
    ],
)
def test_stale_or_corrupt_cache_is_rebuilt(data, tmp_path, corrupt, reason):
    model = Counting()
    expected = predict_logits(model, data, device="cpu", cache=tmp_path, progress=False)
    path = _cache_file(tmp_path)
    corrupt(path, model, data)
    calls = model.calls
    with pytest.warns(RuntimeWarning, match=reason):
        got = predict_logits(model, data, device="cpu", cache=tmp_path, progress=False)
    assert model.calls > calls and all(torch.equal(a, b) for a, b in zip(expected, got, strict=True))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # rebuilt: the next call is a clean hit
        predict_logits(model, data, device="cpu", cache=tmp_path, progress=False)


def test_predict_logits_bad_input(data, tmp_path):
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        predict_logits(lambda x: x, data)
    with pytest.raises(ValueError, match="dataset is empty"):
        predict_logits(Counting(), TensorDataset(torch.zeros(0, 6), torch.zeros(0)))
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        predict_logits(Counting(), data, batch_size=0)
    with pytest.raises(TypeError, match="cache must be a directory path"):
        predict_logits(Counting(), data, cache=3, progress=False)
    with pytest.raises(ValueError, match="device must be"):
        predict_logits(Counting(), data, device="tpu")
