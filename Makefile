# geomux: `make run` starts the whole pipeline on one machine; `make test` runs every test.
MODULES := proto pkg ingress router regional-workers cmd/geomux bench deploy/image deploy/helm
# geomux is built and tested with this Go release, which the go command
# fetches through the Go module proxy (a machine's own Go may be older:
# go1.26.8 has reachable standard-library vulnerabilities, see vulncheck).
export GOTOOLCHAIN ?= go1.27.3
GO      ?= go
BIN     := bin/geomux
CONFIG  ?= deploy/local/geomux.yaml
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
# Fuzz budgets are counts of executions, not durations: a duration races Go
# 1.26's fuzz coordinator at its deadline and fails with a spurious "context
# deadline exceeded" on a loaded machine (go.dev/issue/75804, fixed in 1.27).
FUZZTIME ?= 40000x

.DEFAULT_GOAL := help

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-12s %s\n", $$1, $$2}'

.PHONY: build
build: ## Build bin/geomux: static (CGO_ENABLED=0), -trimpath, version stamped
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-X main.version=$(VERSION)" -o $(BIN) ./cmd/geomux

# The OCI image, built with no container daemon and no network
# (deploy/image, go-containerregistry): the static binary, CA certificates
# and Go's time zone database, as user 65532. The same commit gives the same
# image (files and creation time at SOURCE_DATE_EPOCH: the commit's time).
IMAGE := bin/geomux-image.tar
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)

.PHONY: image
image: build ## Build the OCI image bin/geomux-image.tar (docker load -i bin/geomux-image.tar)
	cd deploy/image && $(GO) run . --binary $(CURDIR)/$(BIN) --version $(VERSION) \
	  --revision "$$(git rev-parse HEAD 2>/dev/null)" --source-date-epoch $(SOURCE_DATE_EPOCH) --out $(CURDIR)/$(IMAGE)

.PHONY: run
run: build ## Run everything in one process with deploy/local/geomux.yaml (embedded NATS, Zoom sandbox)
	$(BIN) run --config $(CONFIG)

# What tests keep for people to look at (t.ArtifactDir: the browser test's
# screenshots) lands in $(ARTIFACTS)/_artifacts/, replaced by each `make test`.
ARTIFACTS := test-artifacts

# The inner loop: make test PKG=router RUN=TestRoute runs the tests of one
# package (a directory, ./... below it with /...) matching RUN, and nothing
# else.
PKG ?=
RUN ?=

.PHONY: test
ifeq ($(PKG),)
test: tidy-lint vet lint modules vulncheck rules helm fuzz ## Run every test of every module with the race detector (screenshots in test-artifacts/); PKG=dir RUN=regexp for one package
	@rm -rf $(ARTIFACTS) && mkdir -p $(ARTIFACTS)
	@set -e; for m in $(MODULES); do echo "== test $$m"; (cd $$m && HELM=$(CURDIR)/bin/helm $(GO) test -race -count=1 -artifacts -outputdir="$(CURDIR)/$(ARTIFACTS)" ./...); done
else
test:
	@p="$(patsubst ./%,%,$(PKG))"; m=""; \
	for c in $(MODULES); do case "$$p" in $$c|$$c/*) [ $${#c} -gt $${#m} ] && m=$$c;; esac; done; \
	[ -n "$$m" ] || { echo "PKG=$(PKG) is in none of the modules: $(MODULES)"; exit 2; }; \
	rel="$${p#$$m}"; cd $$m && HELM=$(CURDIR)/bin/helm $(GO) test -race -count=1 $(if $(RUN),-run '$(RUN)') "./$${rel#/}"
endif

# Go fuzzes one target per invocation. A failing input is saved under the
# package's testdata/fuzz/<target>/: keep it there, it becomes a test case.
.PHONY: fuzz
fuzz: ## Run each fuzz target for FUZZTIME (default 40000x executions), e.g. make fuzz FUZZTIME=2000000x
	cd pkg && $(GO) test -run '^$$' -fuzz '^FuzzVerify$$' -fuzztime $(FUZZTIME) ./zoom
	cd pkg && $(GO) test -run '^$$' -fuzz '^FuzzParseHead$$' -fuzztime $(FUZZTIME) ./zoom
	cd pkg && $(GO) test -run '^$$' -fuzz '^FuzzRead$$' -fuzztime $(FUZZTIME) ./config
	cd pkg && $(GO) test -run '^$$' -fuzz '^FuzzReadEnv$$' -fuzztime $(FUZZTIME) ./config
	cd regional-workers && $(GO) test -run '^$$' -fuzz '^FuzzParseBackendResponse$$' -fuzztime $(FUZZTIME) .

.PHONY: test-short
test-short: ## Run every test without the race detector (faster)
	@set -e; for m in $(MODULES); do (cd $$m && $(GO) test -count=1 ./...); done

# The load benchmark (bench/, bench/README.md): baselines, open-loop
# rate steps end to end, sync_always, a 2-minute memory run and scale-out on
# separate processes, then the realistic-load phases; about 12 minutes on 2
# cores. Results: bench/results/.
BENCH_ARGS ?=
# Micro-benchmarks run each for BENCHTIME (go test -benchtime).
BENCHTIME ?= 300ms

.PHONY: bench
bench: bench-micro bench-load ## Run the micro-benchmarks, then the load benchmark (results in bench/results/)

.PHONY: bench-micro
bench-micro: ## Run the micro-benchmarks of the hot paths (allocations reported)
	@mkdir -p bench/results
	@for m in $(MODULES); do (cd $$m && $(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) ./...); done 2>&1 | tee bench/results/micro.txt
	@! grep -q '^FAIL' bench/results/micro.txt

.PHONY: bench-load
bench-load: build ## Run the load benchmark, e.g. make bench-load BENCH_ARGS="--phases e2e --rates 1000,2000"
	cd bench && $(GO) build -o ../bin/nats-server github.com/nats-io/nats-server/v2 && $(GO) build -o ../bin/geomux-bench .
	bin/geomux-bench --geomux $(BIN) --nats-server bin/nats-server --out bench/results $(BENCH_ARGS)

.PHONY: vet
vet: ## go vet every module
	@set -e; for m in $(MODULES); do (cd $$m && $(GO) vet ./...); done

# The alert rules: promtool (Debian's prometheus package) checks them and
# runs their unit tests. Without promtool a developer's `make test` says so
# and goes on; CI (.ci/run) installs it and sets GEOMUXTEST_REQUIRE_PROMTOOL.
.PHONY: rules
rules: ## Check deploy/prometheus/alerts.yaml and run its unit tests with promtool
	@if ! command -v promtool >/dev/null; then \
	  if [ -n "$$GEOMUXTEST_REQUIRE_PROMTOOL" ]; then echo "promtool not found: apt-get install prometheus"; exit 1; fi; \
	  echo "promtool not found: alert rules not checked (apt-get install prometheus)"; \
	else \
	  promtool check rules deploy/prometheus/alerts.yaml && \
	  cd deploy/prometheus && promtool test rules alerts_test.yaml; \
	fi

# Helm, built from its module (no download of a binary): deploy/helm's test
# runs helm lint and helm template on the chart deploy/helm/geomux.
HELM_VERSION := v3.22.0

.PHONY: helm
helm: ## Install helm in bin/ (the chart's test uses it)
	@GOBIN=$(CURDIR)/bin $(GO) install helm.sh/helm/v3/cmd/helm@$(HELM_VERSION)

.PHONY: modules
modules: ## Check that each module builds on its own, outside the workspace
	@set -e; for m in $(MODULES); do (cd $$m && GOWORK=off $(GO) build ./...); done

# govulncheck, offline: the Go vulnerability database comes as a module
# (golang.org/x/vulndb, its OSV files under data/osv) through the module
# proxy, and govulncheck reads it from disk. A vulnerability reachable from
# geomux's code fails the build. Bump VULNDB to take newer reports.
GOVULNCHECK := v1.9.0
VULNDB      := v0.0.0-20261105234957-e22db6528018

.PHONY: vulncheck
vulncheck: ## Fail on a known vulnerability reachable from any module (govulncheck, offline database)
	@GOBIN=$(CURDIR)/bin $(GO) install golang.org/x/vuln/cmd/govulncheck@$(GOVULNCHECK)
	@db=$$(GOWORK=off GOFLAGS=-mod=mod $(GO) mod download -json golang.org/x/vulndb@$(VULNDB) | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$$/\1/p'); \
	test -d "$$db/data/osv" || { echo "vulncheck: no vulnerability database at $$db/data/osv"; exit 1; }; \
	set -e; for m in $(MODULES); do echo "== vulncheck $$m"; $(CURDIR)/bin/govulncheck -C $$m -db "file://$$db/data/osv" ./...; done

.PHONY: tidy
tidy: ## go mod tidy every module
	@set -e; for m in $(MODULES); do (cd $$m && GOWORK=off $(GO) mod tidy); done

.PHONY: tidy-lint
tidy-lint: ## Fail if a go.mod or go.sum is not tidy
	@set -e; for m in $(MODULES); do (cd $$m && GOWORK=off $(GO) mod tidy -diff) || { echo "$$m is not tidy: run make tidy"; exit 1; }; done

.PHONY: fmt
fmt: ## gofmt every Go file, and group imports: standard, others, geomux
	gofmt -w $(MODULES)
	@GOBIN=$(CURDIR)/bin $(GO) install github.com/daixiang0/gci@$(GCI)
	bin/gci write $(GCI_SECTIONS) $(MODULES)

# staticcheck on every module, and imports in three groups (standard
# library, other modules, geomux's own), checked by gci.
STATICCHECK  := v0.8.2
GCI          := v0.14.0
GCI_SECTIONS := -s standard -s default -s "prefix(github.com/geomux/geomux)" --skip-generated

.PHONY: lint
lint: ## staticcheck every module, and check the import grouping (make fmt fixes it)
	@GOBIN=$(CURDIR)/bin $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK)
	@GOBIN=$(CURDIR)/bin $(GO) install github.com/daixiang0/gci@$(GCI)
	@set -e; for m in $(MODULES); do echo "== staticcheck $$m"; (cd $$m && $(CURDIR)/bin/staticcheck ./...); done
	@out=$$(bin/gci list $(GCI_SECTIONS) $(MODULES)); \
	if [ -n "$$out" ]; then echo "imports not grouped as standard, others, geomux (run make fmt):"; echo "$$out"; exit 1; fi

.PHONY: clean
clean: ## Remove the binary, the local data directory and the test artifacts
	rm -rf bin data $(ARTIFACTS)
