# gpu-metrics-server
#
#   make demo      run the one-process demo: simulated GPUs and pods, the
#                  custom metrics API on 127.0.0.1 (no cluster, no GPU)
#   make test      every test: lint, unit (race), chart, end-to-end against a
#                  real cluster: kube-apiserver, kube-controller-manager,
#                  kube-scheduler and kubelets (what CI runs; needs root)
#   make test-unit the quick loop: unit tests only
#
# Heavy tools (kube-apiserver, kube-controller-manager, kube-scheduler,
# kubelet, helm) are built from the Go module proxy once and cached by
# version under $(GMS_TOOLS_DIR).

SHELL := /usr/bin/env bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := build

GO ?= go
BIN := bin/gpu-metrics-server
PKG := github.com/gpu-metrics-server/gpu-metrics-server
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
REVISION ?= $(shell git rev-parse --verify -q HEAD 2>/dev/null || echo unknown)
BRANCH ?= $(shell git symbolic-ref --short -q HEAD 2>/dev/null || echo unknown)
BUILD_DATE ?= $(shell date -u +%Y-%m-%dT%H:%M:%SZ)
LDFLAGS := -s -w \
	-X github.com/prometheus/common/version.Version=$(VERSION) \
	-X github.com/prometheus/common/version.Revision=$(REVISION) \
	-X github.com/prometheus/common/version.Branch=$(BRANCH) \
	-X github.com/prometheus/common/version.BuildDate=$(BUILD_DATE)

# go-nvml's cgo headers warn about deprecated declarations; silence them.
export CGO_ENABLED := 1
export CGO_CFLAGS ?= -O2 -g -Wno-deprecated-declarations
export GMS_TOOLS_DIR ?= $(HOME)/.cache/gpu-metrics-server/tools

RACE ?= -race
FUZZTIME ?= 10s
# make test fuzzes for a count: no wall-clock deadline to race (hack/fuzz.sh).
FUZZEXECS ?= 20000x
FUZZMINIMIZETIME ?= 1000x
FUZZ_MIN_EXECS ?= 1000
STATICCHECK_VERSION ?= v0.8.2
STATICCHECK := $(GMS_TOOLS_DIR)/staticcheck-$(STATICCHECK_VERSION)/staticcheck

.PHONY: build
build: ## Build bin/gpu-metrics-server.
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/gpu-metrics-server

.PHONY: demo
demo: build ## Run the standalone demo with simulated GPUs (Ctrl-C to stop).
	./$(BIN) standalone --backend=sim --sim-gpus=4 \
		--sim-pods=demo/gpu-app-0,demo/gpu-app-1,demo/gpu-app-2,demo/gpu-app-3 \
		--web.listen-address=127.0.0.1:0 --secure-port=0

.PHONY: deps
deps: ## Install system packages the tests need (etcd, promtool).
	bash hack/install-deps.sh

.PHONY: test
test: deps lint test-unit test-fuzz test-chart verify-manifests test-e2e ## Every test (CI).

.PHONY: test-unit
test-unit: ## Unit and integration tests (no control plane).
	$(GO) test $(RACE) -count=1 ./...

.PHONY: helm
helm: ## Build the helm CLI (cached by version).
	bash hack/build-helm.sh

.PHONY: test-chart
test-chart: ## helm lint/template tests of the chart (offline).
	HELM="$$(bash hack/build-helm.sh)" $(GO) test -tags chart -count=1 ./deploy/...

.PHONY: test-e2e
test-e2e: build ## End-to-end tests against a real cluster (root: nodes in mount namespaces).
	bash hack/e2e.sh

.PHONY: manifests
manifests: ## Render deploy/manifests from the chart.
	bash hack/render-manifests.sh

.PHONY: verify-manifests
verify-manifests: ## Fail if deploy/manifests is out of date with the chart.
	bash hack/render-manifests.sh --check

.PHONY: lint
lint: $(STATICCHECK) ## gofmt, go vet, staticcheck.
	@out="$$(gofmt -l $$(git ls-files '*.go' | grep -v '^hack/tools/'))"; \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags e2e ./e2e/...
	$(GO) vet -tags 'e2e benchcompare' ./e2e/...
	$(GO) vet -tags chart ./deploy/...
	$(GO) vet -tags gpu ./collector/...
	$(STATICCHECK) ./...
	$(STATICCHECK) -tags e2e ./e2e/...
	$(STATICCHECK) -tags 'e2e benchcompare' ./e2e/...
	$(STATICCHECK) -tags chart ./deploy/...
	$(STATICCHECK) -tags gpu ./collector/...

$(STATICCHECK):
	mkdir -p $(dir $@)
	GOBIN=$(abspath $(dir $@)) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

.PHONY: test-fuzz
test-fuzz: ## Every fuzz target for FUZZEXECS inputs each, failing only on a finding (part of make test).
	GO=$(GO) FUZZTIME=$(FUZZEXECS) FUZZMINIMIZETIME=$(FUZZMINIMIZETIME) bash hack/fuzz.sh

.PHONY: fuzz
fuzz: ## Run every fuzz target for FUZZTIME each; fail if one crashes or runs under FUZZ_MIN_EXECS inputs.
	GO=$(GO) FUZZTIME=$(FUZZTIME) FUZZMINIMIZETIME=$(FUZZMINIMIZETIME) FUZZ_MIN_EXECS=$(FUZZ_MIN_EXECS) bash hack/fuzz.sh

.PHONY: bench
bench: ## Micro-benchmarks of the hot paths.
	$(GO) test -run '^$$' -bench . -benchmem ./...

.PHONY: bench-compare
bench-compare: build ## Side by side with Prometheus + prometheus-adapter, and fleet scale (BENCH=compare|fleet|delegate|all).
	bash hack/bench-compare.sh $(or $(BENCH),compare)

.PHONY: image
image: ## Build the container image (needs a Docker engine).
	docker build -t gpu-metrics-server:$(VERSION) .

.PHONY: clean
clean:
	rm -rf bin

.PHONY: help
help:
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "%-18s %s\n", $$1, $$2}'
