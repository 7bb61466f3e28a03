# The two commands a newcomer needs (both create .venv first if it is missing):
#   make run    every lab on the CPU tier, then the portfolio   → runs/latest, portfolio/
#   make test   the whole test suite, nbval over every lab included
# and, to work through the labs by hand:
#   make lab    JupyterLab on your learner copies (exercises/), 127.0.0.1 only
.PHONY: run test setup lab
VENV := .venv

setup:
	@bash scripts/bootstrap.sh

run: setup
	@$(VENV)/bin/labkit run --profile cpu; status=$$?; \
	$(VENV)/bin/labkit portfolio build runs/latest; \
	exit $$status

test: setup
	@$(VENV)/bin/python -m pytest

lab: setup
	@$(VENV)/bin/labkit lab
