# The README's two commands: `make demo` and `make test`. Both set themselves up.
.PHONY: setup demo test lint bench clean

VENV := .venv/bin

setup:
	bash scripts/setup.sh

demo: setup
	PATH=$(CURDIR)/.venv/bin:$$PATH bash scripts/demo.sh

test: setup
	$(VENV)/ruff check .
	PATH=$(CURDIR)/.venv/bin:$$PATH $(VENV)/python -m pytest -q

bench: setup
	$(VENV)/python bench/scan_bench.py

clean:
	rm -rf .venv build *.egg-info .pytest_cache .ruff_cache
