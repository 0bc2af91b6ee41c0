# Attention Atlas. `make site` builds site/, `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
CONFIG ?= site_config.yml
# A CPU build of torch (torch==X+cpu): found by pip's own configuration where
# the machine provides one (local wheels, a mirror), else taken from the
# PyTorch CPU index. On a GPU machine set TORCH_INDEX_URL to a CUDA index, or
# install torch into .venv first: a torch already there is kept.
TORCH_VERSION ?= 2.13.0
TORCH_INDEX_URL ?= https://download.pytorch.org/whl/cpu
STAMP := $(VENV)/.installed
# the test extras (Playwright, bertviz, linkchecker...): only `make test` and `make bench` need them
TEST_STAMP := $(VENV)/.installed-test

.PHONY: site serve test bench bench-gpu bench-readme deploy clean install readme

site: $(STAMP)
	$(PY) -m generator build --config $(CONFIG)

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install "torch==$(TORCH_VERSION)+cpu" || \
	  $(PIP) install "torch==$(TORCH_VERSION)" $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL))
	$(PIP) install -e .
	touch $(STAMP)

$(TEST_STAMP): $(STAMP)
	$(PIP) install -e ".[test]"
	touch $(TEST_STAMP)

serve: site
	$(PY) -m http.server --directory site --bind 127.0.0.1 8000

test: $(TEST_STAMP)
	$(PY) -m pytest

clean:
	rm -rf build site .pytest_cache .hypothesis

# Publish $(SITE_DIR) to the $(BRANCH) branch of $(REMOTE) with ghp-import, as
# `mkdocs gh-deploy` does, with .nojekyll so GitHub Pages serves it as it is.
# ghp-import commits in the git repository of its working directory:
# DEPLOY_REPO (default: this one). NO_BUILD=1 publishes the existing
# $(SITE_DIR) without rebuilding it first. SITE_DIR must be the config's
# output.site_dir when the build runs. Example, to a local bare repository:
#   make deploy NO_BUILD=1 REMOTE=/tmp/pages.git DEPLOY_REPO=/tmp/clone
SITE_DIR ?= site
REMOTE ?= origin
BRANCH ?= gh-pages
DEPLOY_REPO ?= .
DEPLOY_MESSAGE ?= Deploy Attention Atlas site
NO_BUILD ?=
GHP_IMPORT ?= $(abspath $(VENV))/bin/ghp-import
deploy: $(if $(NO_BUILD),,site)
	test -f "$(abspath $(SITE_DIR))/index.html" || { echo "deploy: no site in $(SITE_DIR); run make site" >&2; exit 1; }
	cd "$(DEPLOY_REPO)" && "$(GHP_IMPORT)" --no-jekyll --push --force --remote "$(REMOTE)" --branch "$(BRANCH)" \
	  --message "$(DEPLOY_MESSAGE)" "$(abspath $(SITE_DIR))"

# The benchmark plans (PLANS in generator/bench.py; `python -m generator.bench
# --list --plan gpu` prints one). `make bench`: 2 CPU cores, about 15 minutes,
# results in build/bench.json. `make bench-gpu`: one CUDA GPU (install a CUDA
# torch into .venv first), results in build/bench-gpu.json. `make
# bench-readme`: the README's Performance section from both files (those
# present), one table per machine.
bench: $(TEST_STAMP)
	$(PY) -m generator.bench --plan cpu

bench-gpu: $(TEST_STAMP)
	$(PY) -m generator.bench --plan gpu

bench-readme: $(STAMP)
	$(PY) -m generator.bench --no-run --readme

# Rewrite the README's generated Configuration section from the settings'
# descriptions in generator/config.py (the Performance section: make bench
# then python -m generator.bench --no-run --readme).
readme: $(STAMP)
	$(PY) -m generator.config --readme
