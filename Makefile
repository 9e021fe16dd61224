# make demo: set up .venv and run the kernel offline (smoke mode) into outputs/demo, then validate the CSV.
# make test: set up both venvs, run every test, then the kernel's smoke and count tests on Kaggle's 2025 stack.
PYTHON ?= python3
VENV := .venv
COMPAT := .venv-compat
PYTEST_FLAGS ?= -q

.PHONY: demo test check-compat bench clean

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -r requirements.txt
	$(VENV)/bin/pip install -q --disable-pip-version-check --no-deps -e .
	touch $@

$(COMPAT)/.installed: requirements-kaggle2025.txt
	$(PYTHON) -m venv $(COMPAT)
	$(COMPAT)/bin/pip install -q --disable-pip-version-check -r requirements-kaggle2025.txt
	touch $@

demo: $(VENV)/.installed
	HF_HUB_OFFLINE=1 $(VENV)/bin/python kernel/agnews_lora.py --set smoke=true --set output_dir=outputs/demo
	$(VENV)/bin/lorakit validate outputs/demo/submission.csv

test: $(VENV)/.installed $(COMPAT)/.installed
	$(VENV)/bin/python -m pytest $(PYTEST_FLAGS) tests
	$(MAKE) --no-print-directory check-compat

# The kernel must run on Kaggle's image as well as on current releases.
check-compat: $(COMPAT)/.installed
	$(COMPAT)/bin/python -m pytest $(PYTEST_FLAGS) -m compat tests/test_kernel.py

bench: $(VENV)/.installed
	$(VENV)/bin/python bench/throughput.py --device cpu

clean:
	rm -rf outputs .pytest_cache
