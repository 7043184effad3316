# The two commands a new user needs: `make demo` and `make test`. Both install what is missing first.
.PHONY: setup demo test bench lint

setup:
	./scripts/setup.sh

demo: setup
	.venv/bin/tessera demo

test:
	./scripts/setup.sh --tests
	.venv/bin/ruff check src tests bench
	.venv/bin/python -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder --durations=25

lint: setup
	.venv/bin/ruff check src tests bench

bench: setup
	.venv/bin/python bench/gas.py
	.venv/bin/python bench/workload_overhead.py --provider
	.venv/bin/python bench/indexer.py
	.venv/bin/python bench/diloco.py
	.venv/bin/python bench/verification.py
	.venv/bin/python bench/verification.py --honest-runs 100
	.venv/bin/python bench/verification_gas.py
	.venv/bin/python bench/agents.py
