# make demo: set up .venv and run the kernel offline (smoke mode) into outputs/demo, then validate the CSV.
# make test: set up both venvs, run every test on the newest releases, then the kernel's compat-marked tests
#            (counts, test-file loading, a whole smoke run, the speed changes' exactness) on the versions of
#            Kaggle's current image.
# make test-fast: the inner loop: every test not marked slow (whole runs, docs freshness), newest releases only.
PYTHON ?= python3
VENV := .venv
COMPAT := .venv-compat
PYTEST_FLAGS ?= -q

.PHONY: demo test test-fast check-compat bench clean

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -r requirements.txt
	$(VENV)/bin/pip install -q --disable-pip-version-check --no-deps -e .
	touch $@

$(COMPAT)/.installed: requirements-kaggle.txt
	rm -rf $(COMPAT)
	$(PYTHON) -m venv $(COMPAT)
	$(COMPAT)/bin/pip install -q --disable-pip-version-check -r requirements-kaggle.txt
	touch $@

demo: $(VENV)/.installed
	HF_HUB_OFFLINE=1 $(VENV)/bin/python kernel/agnews_lora.py --set smoke=true --set output_dir=outputs/demo
	$(VENV)/bin/lorakit validate outputs/demo/submission.csv

test: $(VENV)/.installed $(COMPAT)/.installed
	$(VENV)/bin/python -m pytest $(PYTEST_FLAGS) tests
	$(MAKE) --no-print-directory check-compat

test-fast: $(VENV)/.installed
	$(VENV)/bin/python -m pytest $(PYTEST_FLAGS) -m "not slow" tests

# A kernel pushed today runs on Kaggle's current image: it must work there as well as on the newest releases.
check-compat: $(COMPAT)/.installed
	$(COMPAT)/bin/python -m pytest $(PYTEST_FLAGS) -m compat $(wildcard tests/test_kernel_*.py)

bench: $(VENV)/.installed
	$(VENV)/bin/python bench/throughput.py --device cpu

clean:
	rm -rf outputs .pytest_cache
