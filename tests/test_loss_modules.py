"""Losses as modules: each equals its function twin (values and gradients) and shares its defaults."""

from __future__ import annotations

import inspect

import pytest
import torch
from torch import nn

from cskd_viz import losses, methods


def _pair(seed: int = 0, shape=(12, 7)):
    g = torch.Generator().manual_seed(seed)
    student = (2.0 * torch.randn(*shape, generator=g, dtype=torch.float64)).requires_grad_(True)
    teacher = 2.0 * torch.randn(*shape, generator=g, dtype=torch.float64)
    return student, teacher


CASES = [
    (losses.KDLoss, losses.kd_loss, {"temperature": 3.0}),
    (losses.CSKDLoss, losses.cskd_loss, {"temperature": 3.0, "t_low": 1.5, "t_high": 7.0, "cswt": True}),
    (losses.CSKDLoss, losses.cskd_loss, {"temperature": 2.5, "cswt": False}),
    (losses.DISTLoss, losses.dist_loss, {"temperature": 2.0, "beta": 0.5, "gamma": 2.0}),
]


@pytest.mark.parametrize("module_cls, function, params", CASES)
def test_module_equals_function_values_and_gradients(module_cls, function, params):
    criterion = module_cls(**params)
    assert isinstance(criterion, nn.Module)
    student, teacher = _pair()
    by_module = criterion(student, teacher)
    (grad_module,) = torch.autograd.grad(by_module, student)
    by_function = function(student, teacher, **params)
    (grad_function,) = torch.autograd.grad(by_function, student)
    assert by_module.shape == () and float(by_module.detach()) == float(by_function.detach())
    torch.testing.assert_close(grad_module, grad_function, rtol=0, atol=0)


# CSWT's T_i are a stop-gradient, so finite differences (which move T_i) disagree with the
# analytic gradient by design; the CSWT module's gradient is checked against its function above.
@pytest.mark.parametrize("module_cls, function, params", [c for c in CASES if not c[2].get("cswt")])
def test_module_gradcheck(module_cls, function, params):
    criterion = module_cls(**params)
    student, teacher = _pair(seed=1, shape=(6, 4))
    assert torch.autograd.gradcheck(lambda s: criterion(s, teacher), (student,))


@pytest.mark.parametrize("module_cls, function", [(losses.KDLoss, losses.kd_loss), (losses.CSKDLoss, losses.cskd_loss),
                                                  (losses.DISTLoss, losses.dist_loss)])  # fmt: skip
def test_module_defaults_are_the_functions_defaults(module_cls, function):
    fn_defaults = {
        name: p.default
        for name, p in inspect.signature(function).parameters.items()
        if p.default is not inspect.Parameter.empty and name not in ("group", "return_temperatures")
    }
    module_defaults = {
        name: p.default
        for name, p in inspect.signature(module_cls.__init__).parameters.items()
        if p.default is not inspect.Parameter.empty and name != "group"
    }
    assert module_defaults == fn_defaults


def test_methods_share_the_defaults():
    cskd_defaults = {k: v.default for k, v in inspect.signature(losses.cskd_loss).parameters.items()
                     if k in ("temperature", "t_low", "t_high", "cswt")}  # fmt: skip
    method = methods.CSKD()
    assert {k: getattr(method, k) for k in cskd_defaults} == cskd_defaults
    assert methods.KD().temperature == inspect.signature(losses.kd_loss).parameters["temperature"].default
    dist = methods.DIST()
    for name in ("temperature", "beta", "gamma"):
        assert getattr(dist, name) == inspect.signature(losses.dist_loss).parameters[name].default
    # the registry names keep their meaning
    assert methods.get_method("cskd").cswt is False and methods.get_method("cskd_cswt").cswt is True


def test_cskd_module_keeps_last_temperatures():
    student, teacher = _pair()
    criterion = losses.CSKDLoss()
    assert criterion.last_temperatures is None
    criterion(student, teacher)
    expected = losses.cswt_temperatures(student, teacher)
    torch.testing.assert_close(criterion.last_temperatures, expected)
    assert not criterion.last_temperatures.requires_grad
    off = losses.CSKDLoss(cswt=False)
    off(student, teacher)
    assert off.last_temperatures is None


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda: losses.KDLoss(temperature=0), ValueError, "temperature must be > 0"),
        (lambda: losses.CSKDLoss(t_low=5, t_high=2), ValueError, "t_low must be <= t_high"),
        (lambda: losses.CSKDLoss(cswt="yes"), TypeError, "cswt must be a bool"),
        (lambda: losses.DISTLoss(beta=-1), ValueError, "beta and gamma must be >= 0"),
        (lambda: losses.KDLoss(temperature=float("nan")), ValueError, "temperature must be finite"),
    ],
)
def test_module_parameters_are_validated(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_module_bad_input_names_the_argument():
    with pytest.raises(ValueError, match="teacher_logits contains NaN"):
        losses.CSKDLoss()(torch.randn(4, 3), torch.full((4, 3), float("nan")))
    with pytest.raises(ValueError, match="same shape"):
        losses.KDLoss()(torch.randn(4, 3), torch.randn(4, 2))


def test_modules_print_their_parameters():
    assert "temperature=4.0, t_low=2.0, t_high=6.0, cswt=True" in repr(losses.CSKDLoss())
