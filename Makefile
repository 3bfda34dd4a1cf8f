# inkbooth: `make help` lists the targets. Everything runs in a virtual environment in .venv.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TESTDATA := .inkbooth/testdata

.DEFAULT_GOAL := help

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

# pip's and the build backend's output goes to a log: the tail is printed if setup fails.
$(STAMP): pyproject.toml
	@echo "setup: installing inkbooth[dev] into $(VENV) (log: $(VENV)/setup.log)"
	@$(PYTHON) -m venv $(VENV)
	@{ $(BIN)/pip install --upgrade pip && $(BIN)/pip install -e '.[dev]'; } > $(VENV)/setup.log 2>&1 \
		|| { tail -n 40 $(VENV)/setup.log; echo "setup failed; the full log: $(VENV)/setup.log"; exit 1; }
	@touch $(STAMP)

setup: $(STAMP) ## create .venv and install inkbooth with its dev, OCR and local-store extras

demo: setup fonts ## set up, then run both pipelines end to end locally (embedded S3, the printed reader on documents in four font families, a tiny Stable Diffusion); VERBOSE=1 prints every task's log
	$(BIN)/inkbooth demo $(if $(VERBOSE),--verbose)

report-screenshots: setup ## after make demo: PNGs of the demo's two reports for the README (headless Chromium)
	bash scripts/install-chromium.sh
	$(BIN)/python scripts/report-screenshots.py

testdata: ## fetch test data from Debian (real LaTeX-typeset PDFs: tests/evalset.tsv, tests/readset.tsv; tesseract-ocr) into .inkbooth/testdata
	bash scripts/fetch-testdata.sh $(TESTDATA) tests/evalset.tsv tests/readset.tsv

fonts: ## fetch fonts and word lists from Debian (for synthetic training lines) into .inkbooth/fonts
	@bash scripts/fetch-fonts.sh .inkbooth/fonts

reader-latin: setup fonts ## train the Latin reader from scratch (its recipe's 5 stages) and install it in src/inkbooth/readers (about 2 h of one core)
	OMP_NUM_THREADS=1 nice -n 10 $(BIN)/inkbooth reader train latin

reader-printed: setup fonts ## teach the Latin reader real documents (Debian's TeX documentation PDFs and 25 fonts; 5 stages) and install it (about 3.5 h: stages 1-3 on one core, stages 4 and 5 on two)
	bash scripts/fetch-testdata.sh .inkbooth/documents/printed src/inkbooth/readers/printed/documents.tsv
	OMP_NUM_THREADS=1 nice -n 10 $(BIN)/inkbooth reader train printed

reader-cyrillic: setup fonts ## retrain the Cyrillic reader the same way (about 1 h of one core)
	OMP_NUM_THREADS=1 nice -n 10 $(BIN)/inkbooth reader train cyrillic

reader-printed-cyrillic: setup fonts ## teach the Cyrillic reader real documents (Debian's Russian TeX documentation PDFs and 33 fonts with Cyrillic; 2 stages) and install it (about 1 h of one core)
	bash scripts/fetch-testdata.sh .inkbooth/documents/printed-cyrillic src/inkbooth/readers/printed-cyrillic/documents.tsv
	OMP_NUM_THREADS=1 nice -n 10 $(BIN)/inkbooth reader train printed-cyrillic

drawing-clip: setup ## train the small CLIP (shapes-clip) from its recipe and install it in src/inkbooth/drawing/models (about 25 min of one core)
	OMP_NUM_THREADS=1 nice -n 10 $(BIN)/inkbooth drawing train shapes-clip

drawing-model: setup ## train the small drawing model (shapes) and install it; judged by shapes-clip, so train that first (stages 1-2 about 1 h, all 4 about 4 h of one core)
	OMP_NUM_THREADS=1 nice -n 10 $(BIN)/inkbooth drawing train shapes

test: setup testdata fonts ## set up, then lint and run the test suite (what CI runs)
	$(BIN)/ruff check src components pipelines tests bench
	$(BIN)/pytest -q -m "not slow and not gpu" --durations=20

test-all: setup testdata fonts ## every test, slow ones too (not the image proof: make test-images)
	$(BIN)/pytest -q -m "not gpu and not images"

test-load: setup ## the load test: 200 pages, 5,000 lines, memory at 1x and 4x (a few minutes)
	$(BIN)/pytest -q -s -m slow tests/test_load.py

lint: setup ## ruff
	$(BIN)/ruff check src components pipelines tests bench

compile: setup ## recompile pipelines/*.yaml from the pipeline code
	$(BIN)/inkbooth compile

bench: setup testdata ## benchmarks (bench/*.py); figures go in the README
	$(BIN)/python bench/ocr.py
	$(BIN)/python bench/dreambooth.py
	$(BIN)/python bench/pages.py --detectors xycut,ppocr

bench-reading: setup testdata ## reading held-out real documents per font family vs Tesseract (tests/readset.tsv; a few minutes)
	$(BIN)/python bench/reading.py --models printed,latin

bench-reading-cyrillic: setup fonts ## reading held-out Russian documents vs tesseract -l rus (tests/readset-cyrillic.tsv)
	TESSERACT_LANGS="eng rus" bash scripts/fetch-testdata.sh $(TESTDATA) tests/readset-cyrillic.tsv
	$(BIN)/python bench/reading.py --readset tests/readset-cyrillic.tsv --models printed-cyrillic,cyrillic --tesseract-lang rus

bench-pages: setup testdata ## page segmentation vs Tesseract on the real-PDF evaluation set (a few minutes)
	$(BIN)/python bench/pages.py --detectors xycut,ppocr

VERSION = $(shell sed -n 's/^__version__ = "\(.*\)"/\1/p' src/inkbooth/__init__.py)
REGISTRY ?= ghcr.io/inkbooth
VARIANTS ?= ocr-cpu ocr-cuda train-cuda
# BASE: a base image other than the Dockerfiles' python:3.11.11-slim-bookworm (e.g. the stand-in
# from scripts/standin-base.sh); ENGINE: docker, podman or buildah (default: the first that works).
export BASE ENGINE PIP_HOOK

images: ## build the component images (docker, podman or buildah); tag = package version; BASE=, VARIANTS=
	VARIANTS="$(VARIANTS)" REGISTRY=$(REGISTRY) VERSION=$(VERSION) bash scripts/build-images.sh

lock-images: ## re-resolve docker/*/requirements.lock from pyproject.toml (TORCH_WHEELS=folder for the CPU torch)
	$(BIN)/python scripts/lock-images.py $(VARIANTS)

standin-base: ## build a local stand-in for the base image (debootstrap bookworm + python3.11; root, buildah)
	bash scripts/standin-base.sh localhost/inkbooth-base:bookworm-py3.11

push-images: images ## push the component images to $(REGISTRY); build/images/digests.yaml names them by digest
	@mkdir -p build/images
	@echo "images:" > build/images/digests.yaml
	@engine=$$(sed -n 's/.*"engine": "\([a-z]*\)".*/\1/p' build/images/$(firstword $(VARIANTS)).json); \
	for v in $(VARIANTS); do \
	  image=$(REGISTRY)/inkbooth-$$v:$(VERSION); \
	  if [ $$engine = docker ]; then docker push $$image || exit 1; \
	    digest=$$(docker image inspect --format '{{index .RepoDigests 0}}' $$image | cut -d@ -f2); \
	  else $$engine push --digestfile build/images/$$v.digest $$image || exit 1; digest=$$(cat build/images/$$v.digest); fi; \
	  echo "  $$v: $(REGISTRY)/inkbooth-$$v@$$digest" >> build/images/digests.yaml; \
	done; cat build/images/digests.yaml

test-images: setup ## build ocr-cpu and train-cuda, then run every step of every compiled pipeline in them (slow; root)
	$(MAKE) images VARIANTS="ocr-cpu train-cuda" BASE="$$(bash scripts/image-base.sh)"
	$(BIN)/pytest -q -s -m images tests/test_images.py

CLUSTER_FILES = $(wildcard examples/cluster-*.yaml)

manifests: setup ## write the overlay of every example cluster file (and with the Trainer runtime) into build/k8s/, render and validate each, and k8s/cluster/*
	@mkdir -p build/k8s
	@for f in $(CLUSTER_FILES); do \
	  name=$$(basename $$f .yaml | sed 's/^cluster-//'); \
	  for variant in "" "-trainer"; do \
	    $(BIN)/inkbooth manifests --cluster $$f --out build/k8s/$$name$$variant $${variant:+--trainer} > /dev/null || exit 1; \
	    kubectl kustomize build/k8s/$$name$$variant > build/k8s/$$name$$variant.yaml || exit 1; \
	    $(BIN)/kubernetes-validate --strict --quiet -k 1.32.0 build/k8s/$$name$$variant.yaml || exit 1; \
	    echo "build/k8s/$$name$$variant.yaml"; \
	  done; \
	done
	@for k in $(wildcard k8s/cluster/*); do \
	  out=build/k8s/cluster-$$(basename $$k).yaml; \
	  kubectl kustomize $$k > $$out || exit 1; \
	  $(BIN)/kubernetes-validate --strict --quiet -k 1.32.0 $$out || exit 1; \
	  echo "$$out"; \
	done

clean: ## remove the venv and local run data
	rm -rf $(VENV) .inkbooth .pytest_cache

.PHONY: help setup demo report-screenshots testdata fonts reader-latin reader-printed reader-cyrillic reader-printed-cyrillic drawing-clip drawing-model test test-all test-load lint compile bench bench-pages bench-reading bench-reading-cyrillic images lock-images standin-base push-images test-images manifests clean
