"""Shared fixtures for the tests: seeded generators, small logit pairs, a modest hypothesis profile."""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import HealthCheck, settings

# Property tests stay small and deterministic enough for a shared 2-core machine.
settings.register_profile(
    "cskd",
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
# A longer search for local bug hunting: HYPOTHESIS_PROFILE=thorough pytest tests/test_losses.py
settings.register_profile("thorough", parent=settings.get_profile("cskd"), max_examples=500)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "cskd"))

# The tests use tiny tensors and models: one intra-op thread is faster than two on a 2-core machine
# (no thread-pool spinning) and keeps timings of concurrent test processes from interfering.
torch.set_num_threads(1)


@pytest.fixture
def gen() -> torch.Generator:
    """A freshly seeded CPU generator (same numbers in every test that asks for it)."""
    return torch.Generator().manual_seed(20231124)


@pytest.fixture
def logits(gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A float32 ``(6, 5)`` student/teacher pair where the teacher is a noisy copy of the student."""
    student = 2.0 * torch.randn(6, 5, generator=gen)
    teacher = student + torch.randn(6, 5, generator=gen)
    return student, teacher


@pytest.fixture
def logits64(gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A float64 ``(7, 4)`` student/teacher pair (independent draws: a poorly matched student)."""
    student = 3.0 * torch.randn(7, 4, generator=gen, dtype=torch.float64)
    teacher = 3.0 * torch.randn(7, 4, generator=gen, dtype=torch.float64)
    return student, teacher
