# Thin wrapper: every target delegates to dev.py, which needs nothing but Python.
.PHONY: help setup demo test bench lint
help:  ## list targets
	@grep -E '^[a-z]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'
setup:  ## create .venv and install omniroute[dev]
	python3 dev.py setup
demo:  ## run the end-to-end demo on an embedded broker and Redis
	python3 dev.py demo
test:  ## lint, type-check and run the whole test suite
	python3 dev.py test
bench:  ## router throughput vs a raw aiokafka loop
	python3 dev.py bench
lint:  ## ruff + mypy
	python3 dev.py lint
