# The two entry points of the README. Each sets up what it needs first
# (system packages + .venv), so they work on a fresh machine.
PY := .venv/bin/python

.PHONY: demo test setup-demo setup-test bench

setup-demo:
	scripts/setup.sh export

setup-test:
	scripts/setup.sh export,dev

demo: setup-demo
	.venv/bin/musc-edge demo

test: setup-test
	$(PY) -m pytest -q --timeout=1200

bench: setup-test
	.venv/bin/musc-edge bench scoring
	.venv/bin/musc-edge bench encoders
	.venv/bin/musc-edge bench station
