"""Cost of one ``cskd_published`` training step relative to one ``cskd_cswt`` step, same batch size.

Student ``resnet8x4``, teacher ``resnet32x4`` (random weights: the cost does not depend on them), CIFAR-100
sized stand-in data (random uint8 images ``(3, 32, 32)``, 100 classes), batch 64, SGD with momentum and
weight decay. A ``cskd_cswt`` step: one student forward + backward, one teacher forward (``no_grad``),
on the weak view. A ``cskd_published`` step: both views, so two student forwards (one per view, as
published) with one backward through both, two teacher forwards, and the published objective (CE on
both views, ``cs`` + ``cs_mat`` on both, ``cc`` and ``bc`` on the weak one, masks as published).

Two rows: the *compute* step on prepared batches, and the step *including the batch's loading* from
the dataset (``CifarDataset`` crop + flip vs :func:`cskd_viz.views.two_view_dataset`: two crops,
RandAugment, Cutout; in the training process, ``num_workers=0``). The sides alternate, one step
per timed call, after a warm-up step each (:func:`benchmarks._harness.alternate`).

Run: ``python -m benchmarks.published_step [--repeats 7] [--threads 1]``.
"""

from __future__ import annotations

import argparse
import itertools

import torch
from torch.utils.data import DataLoader

from benchmarks._harness import Comparison, alternate, machine_line
from cskd_viz.data import CIFAR100_MEAN, CIFAR100_STD, CifarDataset
from cskd_viz.methods import get_method, total_loss
from cskd_viz.models import get_model
from cskd_viz.views import two_view_dataset

BATCH = 64
STEPS_PER_EPOCH = 50_000 // BATCH  # CIFAR-100's training set, drop_last


def _setup(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (4 * BATCH, 3, 32, 32), dtype=torch.uint8, generator=gen)
    base = CifarDataset(images, torch.arange(4 * BATCH) % 100, CIFAR100_MEAN, CIFAR100_STD, augment=True, seed=seed)
    torch.manual_seed(seed)
    student, teacher = get_model("resnet8x4", 100), get_model("resnet32x4", 100).eval()
    optimizer = torch.optim.SGD(student.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    return base, student, teacher, optimizer


def _loader(dataset) -> itertools.cycle:
    return iter(itertools.cycle(DataLoader(dataset, batch_size=BATCH, shuffle=True, drop_last=True)))


def _steps(student, teacher, optimizer):
    published, cswt = get_method("cskd_published"), get_method("cskd_cswt")

    def published_step(batch) -> None:
        x_weak, x_strong, y = batch
        student_weak, student_strong = student(x_weak), student(x_strong)  # a forward per view, as published
        with torch.no_grad():
            teacher_weak, teacher_strong = teacher(x_weak), teacher(x_strong)
        terms = published(student_weak, teacher_weak, y, strong=(student_strong, teacher_strong))
        optimizer.zero_grad(set_to_none=True)
        total_loss(terms).backward()
        optimizer.step()

    def cswt_step(batch) -> None:
        x, y = batch
        logits = student(x)
        with torch.no_grad():
            teacher_logits = teacher(x)
        optimizer.zero_grad(set_to_none=True)
        total_loss(cswt(logits, teacher_logits, y)).backward()
        optimizer.step()

    return published_step, cswt_step


def run(repeats: int = 7) -> list[Comparison]:
    """The two comparisons (compute only; with the batch's loading)."""
    base, student, teacher, optimizer = _setup()
    published_step, cswt_step = _steps(student, teacher, optimizer)
    two_view = _loader(two_view_dataset(base, seed=0))
    one_view = _loader(base)
    fixed_two, fixed_one = next(two_view), next(one_view)
    compute = alternate(lambda: published_step(fixed_two), lambda: cswt_step(fixed_one), repeats=repeats)
    loaded = alternate(lambda: published_step(next(two_view)), lambda: cswt_step(next(one_view)), repeats=repeats)
    name = f"training step, resnet32x4 -> resnet8x4, batch {BATCH}, stand-in CIFAR-100"
    return [
        Comparison(f"{name}: compute", "cskd_published (2 views)", "cskd_cswt (1 view)", *compute, "-"),
        Comparison(f"{name}: incl. loading the batch", "cskd_published (2 views)", "cskd_cswt (1 view)", *loaded, "-"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(machine_line())
    for comparison in run(args.repeats):
        row = comparison.row()
        print(row)
        ours = sorted(comparison.ours)[len(comparison.ours) // 2]
        minutes = ours * STEPS_PER_EPOCH / 60
        print(f"  -> cskd_published epoch of {STEPS_PER_EPOCH} steps: ~{minutes:.1f} min (extrapolated)")


if __name__ == "__main__":
    main()
