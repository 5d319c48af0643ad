"""Packaging: environment.yml agrees with pyproject.toml, the public API imports, imports stay light."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[1]

# conda package name -> pip distribution name, where they differ
CONDA_TO_PIP = {"pytorch": "torch"}
NOT_RUNTIME = {"python", "pip"}


def _name(requirement: str) -> str:
    """The bare, normalised distribution name of a requirement string ('torch>=2.1' -> 'torch')."""
    name = re.split(r"[\s<>=!~;\[]", requirement.strip(), maxsplit=1)[0]
    return re.sub(r"[-_.]+", "-", name).lower()


def _pyproject() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


def _environment() -> dict:
    with open(ROOT / "environment.yml", encoding="utf-8") as f:
        return yaml.safe_load(f)


def test_environment_yml_parses():
    env = _environment()
    assert isinstance(env, dict)
    assert env.get("name")
    assert isinstance(env.get("channels"), list) and env["channels"]
    assert isinstance(env.get("dependencies"), list)


def test_environment_yml_names_the_runtime_dependencies_of_pyproject():
    env = _environment()
    conda, pip_entries = set(), []
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            pip_entries.extend(dep.get("pip", []))
            continue
        name = _name(dep)
        conda.add(CONDA_TO_PIP.get(name, name))
    conda -= NOT_RUNTIME
    runtime = {_name(r) for r in _pyproject()["project"]["dependencies"]}
    assert conda == runtime, f"only in environment.yml: {conda - runtime}; only in pyproject.toml: {runtime - conda}"
    # the package itself is pip-installed from the checkout
    assert any(entry.replace(" ", "") in ("-e.", ".", "-e./") for entry in pip_entries), pip_entries


def test_environment_yml_python_matches_requires_python():
    env = _environment()
    python = [d for d in env["dependencies"] if isinstance(d, str) and _name(d) == "python"]
    assert python, "environment.yml should pin a python version"
    low = re.search(r">=\s*([\d.]+)", _pyproject()["project"]["requires-python"]).group(1)
    assert low in python[0]


def test_pyproject_metadata():
    project = _pyproject()["project"]
    assert project["name"] == "cskd-viz"
    assert project["scripts"]["cskd-viz"] == "cskd_viz.cli:main"
    dev = {_name(r) for r in project["optional-dependencies"]["dev"]}
    assert {"pytest", "hypothesis", "pyyaml"} <= dev


# the names fixed by DESIGN.md's API contract, plus the ones issue 2 adds
LOSSES_API = ["kd_loss", "batch_cosine_distance", "cswt_temperatures", "cskd_loss", "dist_loss", "exact_cosine"]
DIAGNOSTICS_API = [
    "per_class_cosine",
    "per_sample_cosine",
    "per_sample_kl",
    "top1_agreement",
    "prediction_entropy",
    "KLvsCosine",
    "PerClassCosineAccumulator",
    "TemperatureStatsAccumulator",
    "AgreementAccumulator",
]


def test_public_api_imports():
    from cskd_viz import diagnostics, losses

    for name in LOSSES_API:
        assert callable(getattr(losses, name)), name
        assert name in losses.__all__
    for name in DIAGNOSTICS_API:
        assert callable(getattr(diagnostics, name)), name
        assert name in diagnostics.__all__


def test_public_functions_have_docstrings_with_examples():
    from cskd_viz import diagnostics, losses

    for module, names in ((losses, LOSSES_API), (diagnostics, DIAGNOSTICS_API)):
        for name in names:
            doc = getattr(module, name).__doc__ or ""
            assert "Example" in doc, f"{module.__name__}.{name} lacks an Example"


def test_version():
    import cskd_viz

    assert isinstance(cskd_viz.__version__, str) and cskd_viz.__version__ == _pyproject()["project"]["version"]


HEAVY = ("matplotlib", "ipywidgets", "pandas", "seaborn", "IPython", "torchmetrics", "lightning")


@pytest.mark.parametrize("module", ["cskd_viz", "cskd_viz.losses", "cskd_viz.diagnostics", "cskd_viz.analysis"])
def test_import_does_not_pull_notebook_or_plotting_stacks(module):
    code = (
        "import sys, importlib\n"
        f"importlib.import_module({module!r})\n"
        f"heavy = sorted(m for m in {HEAVY!r} if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"import {module} pulled in: {result.stdout.strip()}"


# ----------------------------------------------------------------------------- structure

MAX_MODULE_LINES = 700
MAX_FUNCTION_CODE_LINES = 60


def _code_lines(node, lines: list[str]) -> int:
    """Lines of code of a function: its body without the docstring, blank lines and comments."""
    import ast

    body = node.body
    first = body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        start = first.end_lineno + 1 if len(body) > 1 else node.end_lineno + 1
    else:
        start = first.lineno
    return sum(1 for line in lines[start - 1 : node.end_lineno] if line.strip() and not line.strip().startswith("#"))


def test_modules_and_functions_stay_small():
    import ast

    too_long, too_big = [], []
    for path in sorted((ROOT / "cskd_viz").rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        lines = text.splitlines()
        if len(lines) > MAX_MODULE_LINES:
            too_big.append(f"{path.relative_to(ROOT)}: {len(lines)} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = _code_lines(node, lines)
                if n > MAX_FUNCTION_CODE_LINES:
                    too_long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {n} lines of code")
    assert not too_big, f"modules over {MAX_MODULE_LINES} lines: {too_big}"
    assert not too_long, f"functions over {MAX_FUNCTION_CODE_LINES} lines of code: {too_long}"
