# The README's two commands: `make demo` and `make test`. Both set themselves up.
.PHONY: setup demo test lint bench package package-check clean

VENV := .venv/bin

setup:
	bash scripts/setup.sh

demo: setup
	PATH=$(CURDIR)/.venv/bin:$$PATH bash scripts/demo.sh

test: setup
	$(VENV)/ruff check .
	PATH=$(CURDIR)/.venv/bin:$$PATH $(VENV)/python -m pytest -q

# The Debian package (dpkg-buildpackage + dh-virtualenv) into dist/.
package:
	bash scripts/build-deb.sh

# Build the wheel and the Debian package, install each (fresh venv; dpkg) and exercise them. CI runs it.
package-check:
	bash scripts/package-check.sh

bench: setup
	$(VENV)/python bench/scan_bench.py

clean:
	rm -rf .venv build *.egg-info .pytest_cache .ruff_cache
