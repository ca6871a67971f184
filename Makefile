# Set-up and everyday commands. The CPU build of torch is installed first so
# that nothing pulls a multi-GB CUDA build.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PQ ?= ../shared/benchmarks/pathquestion
NATIONS ?= ../shared/benchmarks/nations
WEBNLG ?= ../shared/benchmarks/webnlg

.PHONY: demo test check bench models wheel-check clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0

demo: $(BIN)/activate  ## set up, then answer the demo questions with their evidence
	$(BIN)/pip install --quiet -e .
	$(BIN)/kgllm demo

test: $(BIN)/activate  ## set up with the test extras, then run every test
	test -x /usr/bin/chromium || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)  # the page's browser test
	$(BIN)/pip install --quiet -e ".[test]"
	$(MAKE) check
	$(BIN)/pytest --ignore=tests/test_cluster.py
	$(BIN)/pytest --capture=sys tests/test_cluster.py  # a Ray driver in its own process (beside the embedded JVM it has crashed the run); Ray's own fatal messages reach the log

check:  ## lint, format and type checks (the test target runs them first)
	$(BIN)/ruff check kgllm tests benchmarks examples graph
	$(BIN)/ruff format --check kgllm tests benchmarks examples graph
	$(BIN)/mypy

bench: $(BIN)/activate  ## the benchmarks whose tables the README shows
	$(BIN)/pip install --quiet -e ".[test]"
	$(BIN)/kgllm bench ask --out benchmarks/results/ask.md
	$(BIN)/kgllm bench load --out benchmarks/results/load.md
	$(BIN)/kgllm bench kgqa --kb $(PQ)/2H-kb.txt --test $(PQ)/PQ-2H.test.txt --train $(PQ)/PQ-2H.train.txt --minutes 30 --hops 2 --out benchmarks/results/kgqa-pq2h.md
	$(BIN)/kgllm bench kgqa --kb $(PQ)/3H-kb.txt --test $(PQ)/PQ-3H.test.txt --train $(PQ)/PQ-3H.train.txt --minutes 40 --hops 3 --beam 5 --out benchmarks/results/kgqa-pq3h.md
	$(BIN)/kgllm bench llm --minutes 1.5 --out benchmarks/results/llm.md
	$(BIN)/kgllm bench serve --out benchmarks/results/serve.md
	$(BIN)/kgllm bench complete --data $(NATIONS) --budget 60 --throughput-triples 100000 --out benchmarks/results/completion-nations.md
	$(BIN)/kgllm bench resolution --out benchmarks/results/resolution.md
	$(BIN)/kgllm bench claims --out benchmarks/results/claims.md
	$(BIN)/kgllm bench stream --out benchmarks/results/stream.md
	$(BIN)/kgllm bench webnlg --dev $(WEBNLG)/dev.jsonl --train $(WEBNLG)/train.jsonl --size 500 --tasks extract --out benchmarks/results/webnlg-extract.md
	$(BIN)/kgllm bench webnlg --dev $(WEBNLG)/dev.jsonl --size 500 --tasks extract --out benchmarks/results/webnlg-extract-shipped.md
	$(BIN)/kgllm bench webnlg --dev $(WEBNLG)/dev.jsonl --train $(WEBNLG)/train.jsonl --size 0 --tasks verbalize --out benchmarks/results/webnlg-verbalize.md

models: $(BIN)/activate  ## rebuild the construction models shipped in kgllm/models/construction (fixed recipe)
	$(BIN)/pip install --quiet -e .
	$(BIN)/python -m kgllm.pipelines.construction.shipped $(WEBNLG)/train.jsonl

wheel-check:  ## build the wheel, install it in a new virtualenv and run demo, ask, extract and serve outside the checkout
	PYTHON=$(PYTHON) .ci/wheel-check

clean:
	rm -rf $(VENV) graph/demo/*.index
