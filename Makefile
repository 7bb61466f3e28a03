# The two commands a newcomer needs (both create .venv first if it is missing):
#   make run    every lab on the CPU tier, then the portfolio   → runs/latest, portfolio/
#   make test   the whole test suite, nbval over every lab included
.PHONY: run test setup
VENV := .venv

setup:
	@bash scripts/bootstrap.sh

run: setup
	@$(VENV)/bin/labkit run --profile cpu; status=$$?; \
	$(VENV)/bin/labkit portfolio build runs/latest; \
	exit $$status

test: setup
	@$(VENV)/bin/python -m pytest
