# multigres-op Makefile
#
#   make                 ./multigres-op, dynamic glibc build for development
#   make static          build/static/multigres-op: musl-gcc -static, shipped binary
#   make image           the FROM scratch image (docker; without an engine, its files in a chroot)
#   make test            unit tests, symbol check, generated files, alert rules, then integration tests
#                        (real control plane), the 200-cluster scale test and the GitOps e2e
#   make test-unit       unit tests alone (ends "N passed, N failed")
#   make test-integration  integration tests against the real local control plane
#   make test-alerts     the PrometheusRule's alerts unit-tested by promtool (tests/alerts)
#   make test-gitops     real Argo CD and Flux against a private control plane (tests/gitops)
#   make asan            unit tests under ASan+UBSan
#   make valgrind        unit tests under valgrind
#   make tsan            the operator under ThreadSanitizer through t_serving (its three threads)
#   make clang           warning-clean build and unit tests with clang
#   make fuzz            every fuzz target for FUZZ_SECONDS each (libFuzzer)
#   make check-symbols   no unprefixed global symbol in our object
#   make generate        regenerate crds.yaml, the install manifests, config/argocd/argocd-cm.yaml and
#                        the pods table of docs/components.md;
#                        check-generated fails on drift
#   make demo            local control plane + CRDs + operator + sample cluster
#   make bench           figures to compare across commits (BENCH_SIZES="10 100 1000" clusters, BENCH_MIX=100)
#   make test-scale      200 minimal clusters (MGOP_SCALE_CLUSTERS) all Ready, then an idle minute
#                        with no request (~5 minutes on 2 cores)
#   make tools           test tools from Go modules (metrics-lint, promtool, otlp-receiver, cert-manager)
#   make cp-up / cp-down the local control plane alone
#
# Third-party libraries (mbedTLS 3.6.6 LTS, libyaml 0.2.5, jsmn 1.1.0) are built
# from Debian's source packages by scripts/deps.sh into $(MGOP_CACHE)/deps.

MGOP_CACHE ?= $(HOME)/.cache/multigres-op
BENCH_SIZES ?= 10 100 1000
BENCH_MIX ?= 100
export MGOP_CACHE
CC ?= gcc
BASE_VERSION := 0.1.0
GITREV := $(shell git rev-parse --short HEAD 2>/dev/null)
VERSION ?= $(BASE_VERSION)$(if $(GITREV),+$(GITREV))
BUILD := build
WARN := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wformat=2
CFLAGS ?= -O2 -g
BASE_CFLAGS = -std=c11 -D_GNU_SOURCE -DMGOP_VERSION='"$(VERSION)"' -I. $(WARN)
SAN := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
FUZZ_SECONDS ?= 20
SRC := multigres-op.c multigres-op.h

# --- third-party libraries, built once per config into the cache ----------
NODEPS_GOALS := clean help cp-up cp-down
ifneq ($(filter-out $(NODEPS_GOALS),$(or $(MAKECMDGOALS),all)),)
-include $(BUILD)/deps-glibc.mk
endif
ifneq ($(filter static image,$(MAKECMDGOALS)),)
-include $(BUILD)/deps-musl.mk
endif

$(BUILD)/deps-%.mk: scripts/deps.sh scripts/mbedtls_config.h
	@mkdir -p $(BUILD)
	@p=$$(scripts/deps.sh $* | tail -1) && test -f "$$p/flags.mk" && \
	  grep -E '^DEPS_$*_' "$$p/flags.mk" > $@.tmp && mv $@.tmp $@

GLIBC_CFLAGS = $(DEPS_glibc_CFLAGS)
GLIBC_LIBS = $(DEPS_glibc_LIBS) -pthread

.PHONY: FORCE all static test test-unit test-integration test-gitops test-scale test-alerts asan valgrind clang tsan fuzz check-symbols demo \
        cp-up cp-down clean help image generate check-generated tools bench

all: multigres-op

help:
	@sed -n '3,22p' Makefile | sed 's/^# \{0,1\}//'

# The version the binaries carry (HEAD's): the stamp is rewritten only when
# it changes, so a new commit rebuilds them and nothing else does.
$(BUILD)/version: FORCE
	@mkdir -p $(BUILD); echo '$(VERSION)' | cmp -s - $@ || echo '$(VERSION)' >$@
FORCE:

multigres-op: $(SRC) $(BUILD)/deps-glibc.mk $(BUILD)/version
	$(CC) $(BASE_CFLAGS) $(CFLAGS) $(GLIBC_CFLAGS) multigres-op.c -o $@ $(GLIBC_LIBS)

# --- the shipped binary -------------------------------------------------------
$(BUILD)/static/multigres-op: $(SRC) $(BUILD)/deps-musl.mk $(BUILD)/version
	@mkdir -p $(dir $@)
	$(DEPS_musl_CC) $(BASE_CFLAGS) -Os -ffunction-sections -fdata-sections $(DEPS_musl_CFLAGS) \
	  multigres-op.c -o $@ -static -Wl,--gc-sections -s $(DEPS_musl_LIBS) -pthread

static: $(BUILD)/static/multigres-op
	scripts/static-check.sh $<

# The image: Dockerfile (FROM scratch). Tagged with BASE_VERSION, the tag the
# install manifests deploy (a "+gitrev" is not allowed in an image tag).
IMAGE ?= multigres-op:$(BASE_VERSION)
image: static
	@v=$$($(BUILD)/static/multigres-op --version) && case "$$v" in "multigres-op $(BASE_VERSION)"*) ;; \
	  *) echo "image: the binary's version is not $(BASE_VERSION): $$v"; exit 1;; esac
	scripts/image.sh $(IMAGE)

# --- tests ------------------------------------------------------------------------
$(BUILD)/unit: tests/unit.c $(SRC) $(BUILD)/deps-glibc.mk
	@mkdir -p $(BUILD)
	$(CC) $(BASE_CFLAGS) -O1 -g $(GLIBC_CFLAGS) tests/unit.c -o $@ $(GLIBC_LIBS)

$(BUILD)/unit-asan: tests/unit.c $(SRC) $(BUILD)/deps-glibc.mk
	@mkdir -p $(BUILD)
	$(CC) $(BASE_CFLAGS) -O1 -g $(SAN) -DMGOP_SANITIZE $(GLIBC_CFLAGS) tests/unit.c -o $@ $(GLIBC_LIBS)

$(BUILD)/unit-vg: tests/unit.c $(SRC) $(BUILD)/deps-glibc.mk
	@mkdir -p $(BUILD)
	$(CC) $(BASE_CFLAGS) -O0 -g -DMGOP_SANITIZE $(GLIBC_CFLAGS) tests/unit.c -o $@ $(GLIBC_LIBS)

test-unit: $(BUILD)/unit
	$(BUILD)/unit

asan: $(BUILD)/unit-asan
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 $(BUILD)/unit-asan

valgrind: $(BUILD)/unit-vg
	valgrind -q --error-exitcode=3 --leak-check=full --errors-for-leak-kinds=definite \
	  --suppressions=tests/valgrind.supp --track-fds=no $(BUILD)/unit-vg

clang: $(BUILD)/deps-glibc.mk
	@mkdir -p $(BUILD)
	clang $(BASE_CFLAGS) $(CFLAGS) $(GLIBC_CFLAGS) multigres-op.c -o $(BUILD)/multigres-op-clang $(GLIBC_LIBS)
	clang $(BASE_CFLAGS) -O1 -g $(GLIBC_CFLAGS) tests/unit.c -o $(BUILD)/unit-clang $(GLIBC_LIBS)
	$(BUILD)/unit-clang

# Every global symbol our translation unit defines must be mgop_-prefixed
# (or main): nothing is exported by accident.
check-symbols: $(SRC) $(BUILD)/deps-glibc.mk
	@mkdir -p $(BUILD)
	$(CC) $(BASE_CFLAGS) -O2 $(GLIBC_CFLAGS) -c multigres-op.c -o $(BUILD)/multigres-op.o
	@bad=$$(nm -g --defined-only $(BUILD)/multigres-op.o | awk '{print $$3}' | grep -v -E '^(mgop_|main$$)' || true); \
	if [ -n "$$bad" ]; then echo "unprefixed global symbols:"; echo "$$bad"; exit 1; fi; \
	echo "check-symbols: every global symbol is mgop_* or main"

FUZZERS := $(patsubst tests/fuzz/%.c,$(BUILD)/fuzz/%,$(wildcard tests/fuzz/fuzz_*.c))
$(BUILD)/fuzz/%: tests/fuzz/%.c $(SRC) $(BUILD)/deps-glibc.mk
	@mkdir -p $(BUILD)/fuzz
	clang $(BASE_CFLAGS) -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -DMGOP_SANITIZE \
	  $(GLIBC_CFLAGS) $< -o $@ $(GLIBC_LIBS)

fuzz: $(FUZZERS)
	@for f in $(FUZZERS); do \
	  n=$$(basename $$f); mkdir -p $(BUILD)/corpus/$$n; \
	  echo "fuzz: $$n for $(FUZZ_SECONDS)s"; \
	  $$f -max_total_time=$(FUZZ_SECONDS) -max_len=65536 -print_final_stats=0 $(BUILD)/corpus/$$n tests/fuzz/seeds/$$n \
	    2>$(BUILD)/fuzz/$$n.log || { tail -40 $(BUILD)/fuzz/$$n.log; exit 1; }; \
	  grep -E '^(#[0-9]+.*DONE|Done)' $(BUILD)/fuzz/$$n.log | tail -1; \
	done

# The threads (loop, serving, Lease, trace exporter) under ThreadSanitizer:
# t_serving drives admission, probes, a killed API server, SIGKILL and
# SIGTERM, t_tracing the span queue from the loop and the webhook,
# t_metrics_secure the metrics thread, t_backup_contract the backup
# checker's rings; any report fails.
$(BUILD)/multigres-op-tsan: $(SRC) $(BUILD)/deps-glibc.mk
	@mkdir -p $(BUILD)
	$(CC) $(BASE_CFLAGS) -O1 -g -fsanitize=thread $(GLIBC_CFLAGS) multigres-op.c -o $@ $(GLIBC_LIBS)

tsan: $(BUILD)/multigres-op-tsan tools
	@rm -f $(BUILD)/tsan.*
	OP_BIN=$(CURDIR)/$(BUILD)/multigres-op-tsan TSAN_OPTIONS="log_path=$(CURDIR)/$(BUILD)/tsan exitcode=0" \
	  tests/integration/run.sh 'serving|tracing|metrics_secure|backup_contract'
	@if ls $(BUILD)/tsan.* >/dev/null 2>&1; then cat $(BUILD)/tsan.*; echo "tsan: data races reported"; exit 1; fi; \
	  echo "tsan: no data race reported"

test-integration: multigres-op tools
	tests/integration/run.sh

# real Argo CD and Flux (built from Go modules, cached in $(MGOP_CACHE)/gitops) against
# a private control plane: the health Lua unit test, then tests/gitops/g_*.sh
test-gitops: multigres-op
	lua5.1 tests/gitops/health_test.lua config/argocd/health.lua
	tests/gitops/run.sh

# the scale path as a test, on a control plane of its own sized for it
test-scale: multigres-op
	tests/scale/run.sh

# figures to compare across commits (bench/run.sh: convergence time, API requests, RSS, latency)
# the serving-latency client: a compiled one on the operator's own HTTP/TLS code
$(BUILD)/serving_latency: bench/serving_latency.c multigres-op.h $(BUILD)/deps-glibc.mk
	@mkdir -p $(BUILD)
	$(CC) $(BASE_CFLAGS) -O2 $(GLIBC_CFLAGS) bench/serving_latency.c -o $@ $(GLIBC_LIBS)

bench: multigres-op $(BUILD)/serving_latency
	BENCH_MIX=$(BENCH_MIX) bench/run.sh $(BENCH_SIZES)

# test tools from Go modules (metrics-lint: the /metrics checker), cached in $(MGOP_CACHE)
tools:
	scripts/tools.sh

# --- generated files: crds.yaml from its generator; install.yaml, install-certmanager.yaml,
# install-observability.yaml and k3s/multigres-operator.yaml from the kustomize tree
# under config/ (scripts/gen-install.sh, with the control plane's pinned kubectl) ---
generate: multigres-op
	python3 config/crd/gen-crds.py > crds.yaml
	scripts/gen-install.sh generate $(BASE_VERSION)
	config/argocd/gen-argocd-cm.sh > config/argocd/argocd-cm.yaml
	./multigres-op render -f config/samples/minimal.yaml | python3 scripts/gen-pods-table.py generate docs/components.md

check-generated: multigres-op
	@python3 config/crd/gen-crds.py | cmp -s - crds.yaml || { echo "crds.yaml drifted from config/crd/gen-crds.py: run make generate"; exit 1; }
	@./multigres-op render -f config/samples/minimal.yaml | python3 scripts/gen-pods-table.py check docs/components.md
	@scripts/gen-install.sh check $(BASE_VERSION)
	@config/argocd/gen-argocd-cm.sh | cmp -s - config/argocd/argocd-cm.yaml || { echo "config/argocd/argocd-cm.yaml drifted from health.lua: run make generate"; exit 1; }
	@echo "check-generated: crds.yaml, the install manifests and the pods table of docs/components.md match their sources; examples/fleet renders"

# the alert rules under Prometheus's promtool (built from Go modules, cached)
test-alerts:
	tests/alerts/run.sh

test: test-unit check-symbols check-generated test-alerts test-integration test-scale test-gitops

# --- the local control plane and the demo ----------------------------------------
cp-up:
	tests/controlplane/cp.sh build
	tests/controlplane/cp.sh up

cp-down:
	tests/controlplane/cp.sh down

demo: multigres-op
	tests/demo.sh

clean:
	rm -rf $(BUILD) multigres-op
