# The same commands for developers and CI.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test check bench-tracking bench-models bench-features bench-serving bench-monitoring bench-pipelines bench-gates bench-canary bench-ui bench-batch bench-tuning screenshots clean

$(STAMP): pyproject.toml requirements/constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade "pip>=24"
	$(BIN)/python -m pip install -q -c requirements/constraints.txt -e '.[dev]'
	# PyTorch is an optional extra; its CPU build 2.13.0 lies on this kind of machine's
	# disk. Without it the torch tests are reported as skipped, never as passed.
	$(BIN)/python -m pip install -q torch==2.13.0 || echo "torch==2.13.0 not available"
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/modelyard demo

# the suite on TEST_WORKERS pytest-xdist workers (Ray tests together in one of them)
TEST_WORKERS ?= 2
test: install
	scripts/test.sh -n $(TEST_WORKERS) --dist loadgroup --durations=30

check: install
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy src
	$(BIN)/lint-imports

bench-tracking: install
	$(BIN)/python benchmarks/tracking/run.py

bench-models: install
	$(BIN)/python benchmarks/models/run.py

bench-features: install
	$(BIN)/python benchmarks/features/run.py

bench-serving: install
	$(BIN)/python benchmarks/serving/run.py

bench-monitoring: install
	$(BIN)/python benchmarks/monitoring/run.py

bench-pipelines: install
	$(BIN)/python benchmarks/pipelines/run.py

bench-gates: install
	$(BIN)/python benchmarks/gates/run.py

bench-canary: install
	$(BIN)/python benchmarks/canary/run.py

bench-ui: install
	$(BIN)/python benchmarks/ui/run.py

# 2,000,000 rows: native predict_proba, modelyard predict (local, ray), MLflow pyfunc
bench-batch: install
	$(BIN)/python benchmarks/batch/bench_batch.py

# 40 trials with 2 workers: sequential, local processes and Ray; the same best value per seed
bench-tuning: install
	$(BIN)/python benchmarks/tuning/bench_ray.py

# PNGs of the web UI's main pages of $(PROJECT) into docs/screenshots/ (run `make demo` first)
PROJECT ?= modelyard-demo
screenshots: install
	$(BIN)/python scripts/screenshots.py --project $(PROJECT) --out docs/screenshots

clean:
	rm -rf $(VENV) modelyard-demo .pytest_cache .mypy_cache .ruff_cache
