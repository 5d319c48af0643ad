# Two commands (see README): `make demo` runs the demo, `make test` runs the test suite.
# Both create the virtual environment on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch/torchvision releases that install from the local wheel store on our machines.
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1

.PHONY: demo test venv lint bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH_PINS)
	$(BIN)/pip install --quiet -e '.[dev]' $(TORCH_PINS)
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

venv: $(BIN)/.installed

demo: venv
	$(BIN)/cskd-viz demo

test: venv
	$(BIN)/python -m pytest -q

lint: venv
	$(BIN)/ruff check cskd_viz tests benchmarks

bench: venv
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) runs demo_output test-artifacts
