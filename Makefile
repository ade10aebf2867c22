# The two commands of the README: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO_CUSTOMERS ?= 20000
DEMO_MONTHS    ?= 24

.PHONY: setup demo test bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "$(PYTHON) not found; set PYTHON=/path/to/python3.11"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: setup
	$(BIN)/propensity synth --customers $(DEMO_CUSTOMERS) --months $(DEMO_MONTHS)
	$(BIN)/propensity validate
	$(BIN)/propensity features build
	$(BIN)/propensity train
	$(BIN)/propensity score
	$(BIN)/propensity sql "SELECT tier, legal_basis, COUNT(DISTINCT customer_id) AS customers, COUNT(*) AS score_rows FROM latest_scores GROUP BY ALL ORDER BY tier"
	$(BIN)/propensity sql "SELECT product, rank, customer_id, ROUND(probability, 4) AS probability, tier FROM latest_scores WHERE product IN ('mortgage', 'car_loan') AND rank <= 10 ORDER BY product, rank"

test: setup
	$(BIN)/python -m pytest -q -p no:randomly

bench: setup
	$(BIN)/python benchmarks/bench_synth.py
	$(BIN)/python benchmarks/bench_features.py
	$(BIN)/python benchmarks/bench_train.py
	$(BIN)/python benchmarks/bench_score.py

clean:
	rm -rf data
