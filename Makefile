# The README's two commands: `make demo` and `make test`. Both set up .venv first.
PY := .venv/bin/python
PYTEST_ARGS ?=

.PHONY: setup demo test smoke

setup:
	bash tools/setup_env.sh

demo: setup
	bash tools/run_demo.sh

test: setup
	$(PY) -m pytest tests $(PYTEST_ARGS)
