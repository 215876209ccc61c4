# Two entry points: `make demo` and `make test`. Both create .venv when missing and install the
# package with the pinned versions in constraints.txt (refresh them deliberately with `make lock`).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
EXTRAS ?= dev,ml,torch,ops,vision,nlp,finetune,llm,rag,serve,agents
STAMP  := $(VENV)/.installed-$(shell echo "$(EXTRAS)" | tr ',' '-')

.PHONY: install demo test test-slow lint bench lock clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[$(EXTRAS)]"
	@touch $@

install: $(STAMP)

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
