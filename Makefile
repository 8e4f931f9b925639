# vlmprune: every target installs what it needs into .venv first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
GRID ?= modality_ratio
EXECUTOR ?= local
WORKERS ?=
PYTEST_FLAGS ?=

.PHONY: paper install sweep server search report test test-fast check-slow lint zoo zoo-check bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch and torchvision pinned together: both lie on this machine's disk for pip
	$(PY) -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install --quiet -e '.[dev,ray]'
	touch $@

install: $(STAMP)

sweep: $(STAMP)
	$(VENV)/bin/vlmprune sweep $(GRID) --executor $(EXECUTOR) $(if $(WORKERS),--workers $(WORKERS))

server: $(STAMP)
	$(VENV)/bin/vlmprune server

TRIALS ?=
search: $(STAMP)
	$(VENV)/bin/vlmprune search $(GRID) $(if $(TRIALS),--trials $(TRIALS)) --executor $(EXECUTOR) $(if $(WORKERS),--workers $(WORKERS))

report: $(STAMP)
	$(VENV)/bin/vlmprune report $(GRID)

# The paper study on shapes-llava (docs/REPRODUCTION.md): seven grids with three seeds (the
# four findings, SparseGPT's mask probe, recovery against steps, allocations, the split
# question at an equal parameter-weighted budget), one search, and the reference report
# reports/paper/ (committed). Resumes like any sweep; docs/REPRODUCTION.md has the measured
# runs and their times. The probe, the paired comparisons and the
# summary are the study's own code (studies/paper/, run from the checkout).
PAPER_GRIDS = modality_ratio modality_choice methods sparsegpt_probe recovery equal_budget \
  allocation
# The grids run on a pool of $(PAPER_WORKERS) one-thread workers: on 2 cores one 2-thread sweep
# leaves a third of the CPU idle (tokenizing, generation's Python, logging); two one-thread
# cells keep both busy. The search's trials stay in order (each sampled after the last one's
# score), at the machine's threads, beside the outlier probe at one.
PAPER_WORKERS ?= 2
paper: $(STAMP)
	@set -e; for g in $(PAPER_GRIDS); do \
	  VLMPRUNE_REPORTS=reports/paper $(VENV)/bin/vlmprune sweep experiments/paper/$$g.yaml \
	    --executor pool --workers $(PAPER_WORKERS); done
	@mkdir -p reports/paper/modality_search
	@(VLMPRUNE_REPORTS=reports/paper $(VENV)/bin/vlmprune search modality_search \
	  > reports/paper/modality_search/trials.txt 2>&1) & s=$$!; \
	  OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE $(PY) -m studies.paper.probes --out reports/paper; \
	  p=$$?; wait $$s; r=$$?; tail -n 4 reports/paper/modality_search/trials.txt; \
	  if [ $$r -ne 0 ]; then exit $$r; fi; exit $$p
	$(PY) -m studies.paper.summary --out reports/paper

# Every test is in one tier (tests/conftest.py): unit, integration, system. `make test` runs
# them all on $(TEST_WORKERS) processes (pytest-xdist; a file's tests stay on one, so its
# fixtures are built once); `make test-fast` runs the unit tier: no other process, no browser.
# Lint runs beside the tests (alone it kept one core busy and the other idle for 10-20 s);
# its output comes after theirs, and either failing fails `make test`.
TEST_WORKERS ?= 2
test: $(STAMP)
	@log=$$(mktemp); ($(MAKE) --no-print-directory lint >$$log 2>&1) & lint=$$!; \
	$(PY) -m pytest -q -m "not gpu" -n $(TEST_WORKERS) --dist loadfile $(PYTEST_FLAGS); t=$$?; \
	wait $$lint; l=$$?; cat $$log; rm -f $$log; \
	if [ $$l -ne 0 ]; then echo "make test: lint failed (make lint)"; exit $$l; fi; exit $$t

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "unit and not gpu" $(PYTEST_FLAGS)

check-slow: $(STAMP)
	$(PY) -m pytest -q -m slow $(PYTEST_FLAGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check harness tests benchmarks studies
	$(VENV)/bin/mypy harness tests benchmarks studies

# Retrain the embedded model (seeded; about 50 minutes on 2 cores): the committed weights.
zoo: $(STAMP)
	$(PY) -m harness.zoo.train --out harness/zoo/shapes-llava

zoo-check: $(STAMP)
	$(VENV)/bin/vlmprune zoo-check

clean:
	rm -rf results/cache .pytest_cache

$(VENV)/.installed-bench: $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	touch $@

bench: $(VENV)/.installed-bench
	$(PY) benchmarks/prune_speed.py
	$(PY) benchmarks/prune_memory.py
	$(PY) benchmarks/prune_accuracy.py
	$(PY) benchmarks/eval_speed.py
	$(PY) benchmarks/eval_cell.py
	$(PY) benchmarks/startup.py
	$(PY) benchmarks/recovery.py
	$(PY) benchmarks/sweep_overhead.py
	$(PY) benchmarks/cache_verify.py
	$(PY) benchmarks/report_speed.py
	$(PY) benchmarks/search_overhead.py
	$(PY) benchmarks/allocation_overhead.py
	$(PY) benchmarks/dispatch.py
