# make quickstart : set up on first use, then the whole method on the embedded corpus (~13 min on 2 cores; longer on slower CPUs)
# make run   : set up on first use, then train a first LM on a sample corpus
# make test  : set up on first use, then run the test suite (~7 min on 2 cores; the slow and fault
#              suites run after it in .ci/run: `make test-slow`, `make test-faults`)
# make bench : LM step throughput and fraction of the measured matmul peak
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install quickstart run test test-slow test-faults test-interop bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

quickstart: $(STAMP)
	$(VENV)/bin/datarater quickstart

run: $(STAMP)
	$(PY) -m datarater.programs.sample runs/sample.jsonl
	$(VENV)/bin/datarater train-lm model=nano corpus.paths=[runs/sample.jsonl] train.steps=100 run_dir=runs/first-lm

test: $(STAMP)
	$(VENV)/bin/pytest -q -rs -m "not slow" --ignore=tests/faults

test-slow: $(STAMP)
	$(VENV)/bin/pytest -q -m slow --ignore=tests/faults

# the parity tests against transformers and lm-eval (tests/interop; make test skips them without the extra)
test-interop: $(STAMP)
	$(VENV)/bin/pytest -q tests/interop

test-faults: $(STAMP)
	mkdir -p runs && DATARATER_FAULT_TABLE=runs/faults.md $(VENV)/bin/pytest -q tests/faults
	@cat runs/faults.md

bench: $(STAMP)
	$(PY) benchmarks/lm_step.py

clean:
	rm -rf $(VENV) runs .pytest_cache
