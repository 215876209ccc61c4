# Two entry points: `make demo` and `make test`. Both create .venv when missing and install the
# package with the pinned versions in constraints.txt (refresh them deliberately with `make lock`).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
EXTRAS ?= dev,ml,torch,ops,vision,nlp,finetune,llm,rag,serve,agents,assistant,security
STAMP  := $(VENV)/.installed-$(shell echo "$(EXTRAS)" | tr ',' '-')

.PHONY: install system demo test test-slow lint bench lock clean

# Debian packages features need at run time (bubblewrap: the python tool's OS sandbox; shellcheck: actionlint
# checks the workflows' run: scripts with it). Installed by `make system` (root or sudo); `.ci/run` calls it so a
# clean machine gets them the same way.
# docker-compose: validates deploy/compose.yaml (L26) where no container engine runs. chromium: the UI's browser
# tests (driven by Playwright with executable_path; Playwright's own browser download is not used).
SYSTEM_PACKAGES ?= bubblewrap chromium shellcheck docker-compose
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[$(EXTRAS)]"
	@touch $@

install: $(STAMP)

system:
	@missing=$$(for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages: $$missing"; \
	  $(SUDO) apt-get update -q && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	else echo "Debian packages present: $(SYSTEM_PACKAGES)"; fi

demo: install
	$(BIN)/mastery labs demo

test: install
	$(BIN)/python -m pytest -q -m "not slow"

test-slow: install
	$(BIN)/python -m pytest -q -m slow

lint: install
	$(BIN)/ruff check src tests benchmarks

bench: install
	$(BIN)/python benchmarks/l01_dense.py
	$(BIN)/python benchmarks/full_preset_times.py

# Re-resolve and pin every dependency of the extras above.
lock:
	rm -rf .lockvenv && $(PYTHON) -m venv .lockvenv
	.lockvenv/bin/python -m pip install -q --upgrade pip
	.lockvenv/bin/python -m pip install -q -e ".[$(EXTRAS)]"
	.lockvenv/bin/python -m pip freeze --exclude-editable | grep -v '^mastery' > constraints.txt
	rm -rf .lockvenv

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
