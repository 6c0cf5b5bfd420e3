# The README's two commands: `make demo` and `make test`. Both set themselves up.
.PHONY: setup demo test test-postgres lint bench package package-check vagrant-e2e vagrant-smoke clean

VENV := .venv/bin

setup:
	bash scripts/setup.sh

demo: setup
	PATH=$(CURDIR)/.venv/bin:$$PATH bash scripts/demo.sh

test: setup
	$(VENV)/ruff check .
	PATH=$(CURDIR)/.venv/bin:$$PATH $(VENV)/python -m pytest -q --durations=15

# The test suite again with every store on a real PostgreSQL server (a throwaway cluster the tests start);
# the lab's end-to-end tests run once, on SQLite, in `make test`.
test-postgres: setup
	LLMVIRT_TEST_DB=postgresql PATH=$(CURDIR)/.venv/bin:$$PATH $(VENV)/python -m pytest -q --durations=15 -m "not lab"

# The Debian package (dpkg-buildpackage + dh-virtualenv) into dist/.
package:
	bash scripts/build-deb.sh

# Build the wheel and the Debian package, install each (fresh venv; dpkg) and exercise them. CI runs it.
package-check:
	bash scripts/package-check.sh

# The Vagrant lab (root): box built here from Debian packages, kvm1..kvm3 booted, vagrant/e2e.py run from this
# machine over qemu+ssh, everything destroyed. vagrant-smoke: box plus one machine, checked over ssh (CI).
vagrant-e2e:
	bash vagrant/run-e2e.sh

vagrant-smoke:
	bash vagrant/run-e2e.sh --smoke

bench: setup
	$(VENV)/python bench/scan_bench.py

clean:
	rm -rf .venv build *.egg-info .pytest_cache .ruff_cache
