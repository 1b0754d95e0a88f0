# pkirenewd — see `make help`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
CACHE   ?= $(HOME)/.cache/pkirenewd
export PKIRENEWD_CACHE := $(CACHE)
GO      ?= go
LDFLAGS := -s -w -X main.version=$(VERSION)
BIN     := bin/pkirenewd
# Pinned Go tools, installed into the cache (not the repo, not GOPATH/bin).
STATICCHECK_VERSION := v0.8.2
GOVULNCHECK_VERSION := v1.9.0
TOOLS_BIN := $(CACHE)/tools

.PHONY: help build test unit kubeadm containerd demo bench lint vulncheck clean deb rpm stage package-test fuzz e2e e2e-ci

help: ## Show this help
	@awk 'BEGIN{FS=":.*## "} /^[a-zA-Z0-9_-]+:.*## /{printf "  \033[1m%-10s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

build: ## Build bin/pkirenewd (static)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/pkirenewd

kubeadm: ## Build kubeadm of every pinned Kubernetes version (test/tools/versions) into the cache (minutes each cold, instant warm)
	@bash test/tools/build-k8s.sh --range >/dev/null

unit: ## Unit tests only (no kubeadm)
	$(GO) test -count=1 ./...

containerd: ## Install containerd and runc from Debian if missing (for the CRI tests)
	@bash test/containerdrig/ensure-containerd.sh

test: kubeadm containerd ## Full test suite: packages under a real systemd, unit tests, real kubeadm, real containerd
	$(MAKE) --no-print-directory package-test
	@# test/kubeadm's TestKubeadmCompatibility runs for the kubeadm of every
	@# pinned version and writes a line per version to the report printed here.
	report=$$(mktemp) && \
	PKIRENEWD_KUBEADM=$$(bash test/tools/build-k8s.sh kubeadm | tail -1)/kubeadm \
	PKIRENEWD_KUBEADMS="$$(bash test/tools/build-k8s.sh --range | tail -1)" \
	PKIRENEWD_KUBEADM_REPORT=$$report \
		$(GO) test -count=1 -timeout 20m ./...; rc=$$?; \
	echo "kubeadm compatibility, per Kubernetes version (test/tools/versions):"; \
	if [ -s $$report ]; then sed 's/^/  /' $$report; else echo "  no result (test/kubeadm did not finish)"; fi; \
	rm -f $$report; exit $$rc

E2E_LOGS ?= /tmp/pkirenewd-e2e-logs

e2e: containerd ## End to end: a real control plane (kubelet, etcd, apiserver, cm, scheduler on containerd; owns /etc/kubernetes), day 366, and a three-member etcd HA rig
	bash test/tools/build-k8s.sh --full >/dev/null
	rm -rf $(E2E_LOGS) && mkdir -p $(E2E_LOGS)
	PKIRENEWD_E2E_LOGS=$(E2E_LOGS) $(GO) test -tags e2e -count=1 -p 1 -timeout 60m -v ./test/e2e/ ./test/ha/ || \
		{ echo "e2e failed; log tails from $(E2E_LOGS):"; find $(E2E_LOGS) -type f -name '*.log' -exec sh -c 'echo "== $$1"; tail -20 "$$1"' _ {} \; ; exit 1; }

# The e2e subset CI runs on a new machine: one scenario per promise, all on
# the default version (so one full set is built, not three): the .deb under
# its own unit on the real control plane, a renewal and its roll,
# restartPolicy needed with 0 s of API downtime, day 366, check saying only
# what it saw (and the kubelet gate), and the HA rig. `make e2e`
# runs every scenario (upgrades, other versions, rollbacks, ...): run it
# before landing anything that touches the renew-and-restart flow.
E2E_CI_RUN := ^(TestPackagedNodeUnderItsUnit|TestRenewalRollsTheRealControlPlane|TestNeededPolicyRenewalWithoutDowntime|TestDay366ExpiredControlPlaneIsHealed|TestCheckSaysOnlyWhatItSaw|TestSameKeyCARenewalOnTheRealControlPlane|TestWorkerCASyncAgainstTheRealAPIServer|TestHAClusterUp|TestThreeNodesTakeTurns|TestThreeNodesEndWithOneCA)$$

e2e-ci: containerd ## The e2e subset CI runs (one scenario per promise, default version only); `make e2e` runs them all
	bash test/tools/build-k8s.sh all >/dev/null
	rm -rf $(E2E_LOGS) && mkdir -p $(E2E_LOGS)
	PKIRENEWD_E2E_LOGS=$(E2E_LOGS) $(GO) test -tags e2e -count=1 -p 1 -timeout 40m -v -run '$(E2E_CI_RUN)' ./test/e2e/ ./test/ha/ || \
		{ echo "e2e failed; log tails from $(E2E_LOGS):"; find $(E2E_LOGS) -type f -name '*.log' -exec sh -c 'echo "== $$1"; tail -20 "$$1"' _ {} \; ; exit 1; }

package-test: deb rpm ## Unit and package checks (systemd-analyze, lintian, rpm) and the .deb and .rpm under systemd-nspawn
	bash test/packaging/check.sh
	rm -rf dist/upgrade && mkdir -p dist/upgrade
	VERSION=$(PKG_VERSION).1 $$(bash test/tools/build-nfpm.sh | tail -1) package -f packaging/nfpm.yaml -p rpm -t dist/upgrade/
	bash test/packaging/nspawn.sh dist/pkirenewd_*.deb dist/pkirenewd-*.rpm dist/upgrade/pkirenewd-*.rpm

demo: build ## Make a throwaway PKI about to expire, check it, renew it, check again
	@bash test/demo.sh $(BIN)

bench: build kubeadm containerd ## Benchmarks: renewal vs `kubeadm certs renew all`, restart stop-to-healthy on containerd
	PKIRENEWD_KUBEADM=$$(bash test/tools/build-k8s.sh kubeadm | tail -1)/kubeadm \
		$(GO) test -count=1 -run '^$$' -bench . -benchtime 5x ./test/kubeadm/ | tee /tmp/pkirenewd-bench.txt
	@bash test/bench-ratio.sh /tmp/pkirenewd-bench.txt
	$(GO) test -count=1 -run '^$$' -bench Restart -benchtime 10x ./test/restart/
	bash test/idle-cost.sh $(BIN) 60

FUZZTIME ?= 10m
FUZZ_TARGETS := pki:FuzzParseCertPEM pki:FuzzParseKeyPEM kubeconfig:FuzzKubeconfig kubeadmconfig:FuzzParseKubeadmConfig \
	config:FuzzParse config:FuzzParseDuration cri:FuzzParseManifest cri:FuzzCrictlYAML

fuzz: ## Run every fuzz target for FUZZTIME (default 10m) each; `make test` runs their seed corpora
	@for t in $(FUZZ_TARGETS); do pkg=$${t%%:*}; fn=$${t##*:}; echo "== $$pkg $$fn ($(FUZZTIME))"; \
		$(GO) test ./$$pkg/ -run '^$$' -fuzz "^$$fn\$$" -fuzztime $(FUZZTIME) || exit 1; done

lint: ## go vet, gofmt, one clock (test/clockcheck.sh), staticcheck and govulncheck (pinned; govulncheck offline against test/vulndb)
	$(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed: $$out"; exit 1; fi
	bash test/clockcheck.sh
	@test -x $(TOOLS_BIN)/staticcheck || GOBIN=$(TOOLS_BIN) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
	$(TOOLS_BIN)/staticcheck ./...
	@test -x $(TOOLS_BIN)/govulncheck || GOBIN=$(TOOLS_BIN) $(GO) install golang.org/x/vuln/cmd/govulncheck@$(GOVULNCHECK_VERSION)
	test/vulncheck.sh $(TOOLS_BIN)/govulncheck

vulncheck: ## govulncheck (pinned) against the live Go vulnerability database (needs its server; lint uses the snapshot)
	@test -x $(TOOLS_BIN)/govulncheck || GOBIN=$(TOOLS_BIN) $(GO) install golang.org/x/vuln/cmd/govulncheck@$(GOVULNCHECK_VERSION)
	$(TOOLS_BIN)/govulncheck ./...

# Package version from git: v1.2.3 -> 1.2.3; untagged -> 0.0.0~git<date>.<sha>.
PKG_VERSION ?= $(shell v=$$(git describe --tags --exact-match 2>/dev/null) && echo $${v\#v} || echo 0.0.0~git$$(git log -1 --format=%cd --date=format:%Y%m%d%H%M%S).$$(git rev-parse --short HEAD))

stage: build
	rm -rf dist/stage && mkdir -p dist/stage
	cp $(BIN) dist/stage/pkirenewd
	gzip -9n < packaging/man/pkirenewd.8 > dist/stage/pkirenewd.8.gz
	$(BIN) completion bash > dist/stage/pkirenewd.bash
	$(BIN) completion zsh > dist/stage/_pkirenewd
	printf 'pkirenewd ($(PKG_VERSION)-1) unstable; urgency=medium\n\n  * Built from git $(VERSION).\n\n -- pkirenewd developers <pkirenewd@example.org>  %s\n' "$$(date -R -d @$$(git log -1 --format=%ct))" | gzip -9n > dist/stage/changelog.Debian.gz

deb: stage ## Build dist/pkirenewd_<version>_amd64.deb (nfpm, pinned)
	rm -f dist/*.deb
	VERSION=$(PKG_VERSION) $$(bash test/tools/build-nfpm.sh | tail -1) package -f packaging/nfpm.yaml -p deb -t dist/

rpm: stage ## Build dist/pkirenewd-<version>.x86_64.rpm (nfpm, pinned)
	rm -f dist/*.rpm
	VERSION=$(PKG_VERSION) $$(bash test/tools/build-nfpm.sh | tail -1) package -f packaging/nfpm.yaml -p rpm -t dist/

clean: ## Remove build output (the tool cache stays)
	rm -rf bin dist
