# Benchmarks against the real Envoy (see docs/performance.md).
#
#   make bench             throughput, latency and CPU per request of every scenario -> bench/results.md
#   make bench-callgrind   instructions per request under valgrind -> bench/callgrind.md
#   make bench-memory      Envoy RSS after 10,000 vs 1,000,000 requests -> bench/memory.md
#   make bench-routes      RSS and time to ready with 1,000 to 100,000 per-route configs (three policies), RDS update -> bench/routes.md
#   make bench-micro       criterion micro-benchmarks of the transformations and acl crates
#   make bench-smoke       every scenario for a second, each response checked (part of make test)
#
# BENCH_ARGS passes options to bench/bench.py run, e.g. BENCH_ARGS="--runs 3 --duration 3".

BENCH_ARGS ?=
BENCH_PY := $(CURDIR)/bench/bench.py

.PHONY: bench bench-callgrind bench-memory bench-routes bench-micro bench-smoke bench-tools

# wrk (and valgrind for bench-callgrind) come from Debian; installed here when missing (root).
bench-tools: ## Install wrk from Debian when missing
	@command -v wrk >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; \
	  else echo "wrk is missing: apt-get install wrk (Debian/Ubuntu)" >&2; exit 1; fi; }

bench: build envoy venv bench-tools ## Throughput, latency and CPU per request of every scenario -> bench/results.md
	$(PY) $(BENCH_PY) run --out bench/results.md $(BENCH_ARGS)

bench-callgrind: build envoy venv bench-tools ## Instructions per request under valgrind -> bench/callgrind.md
	@command -v valgrind >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind; \
	  else echo "valgrind is missing: apt-get install valgrind" >&2; exit 1; fi; }
	$(PY) $(BENCH_PY) callgrind --out bench/callgrind.md

bench-memory: build envoy venv bench-tools ## Envoy RSS after 10,000 vs 1,000,000 requests -> bench/memory.md
	$(PY) $(BENCH_PY) memory --out bench/memory.md

bench-routes: build envoy venv ## RSS and time to ready with 1,000, 10,000 and 100,000 per-route configs, and a route update under load -> bench/routes.md
	$(PY) $(BENCH_PY) routes --out bench/routes.md

bench-micro: ## Criterion micro-benchmarks of the transformations and acl crates
	$(CARGO) bench -p transformations -p acl

bench-smoke: build envoy venv bench-tools ## Every scenario for a second, each response checked (part of make test)
	$(PY) $(BENCH_PY) smoke

TEST_CHECKS += bench-smoke
