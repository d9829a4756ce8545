# The README's two commands: `make demo` and `make test`. Both set up .venv first.
# `make test-fast` is the inner loop: the same tests without the slow end-to-end ones.
PY := .venv/bin/python
PYTEST_ARGS ?=

.PHONY: setup demo test test-fast

setup:
	bash tools/setup_env.sh

demo: setup
	bash tools/run_demo.sh

test: setup
	$(PY) -m pytest tests $(PYTEST_ARGS)

test-fast: setup
	$(PY) -m pytest tests -m "not slow" $(PYTEST_ARGS)
