# Two entry points for a fresh machine: `make demo` and `make test`.
# Both create .venv on first use with the pinned versions in requirements.lock.
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: demo test lint bench headline lock

$(VENV)/.installed: pyproject.toml requirements.lock
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet -c requirements.lock -e '.[test]'
	touch $@

# The bundled CNN's 540 test samples hold out 271 to verify on: enough for a 1.5-point budget, not 0.5.
demo: $(VENV)/.installed
	$(VENV)/bin/hetmap compile -o build/demo --objective analog-share --max-drop 1.5
	$(VENV)/bin/hetmap run build/demo/model.mapped.onnx --data models/cnn.test.npz --seeds 3

test: lint
	$(PY) -m pytest -q

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: $(VENV)/.installed
	$(PY) -m bench.scale

headline: $(VENV)/.installed
	$(PY) -m bench.headline

lock: $(VENV)/.installed
	{ head -2 requirements.lock; $(PY) -m pip freeze --exclude-editable | sed 's/+cpu//'; } > requirements.lock.new
	mv requirements.lock.new requirements.lock
