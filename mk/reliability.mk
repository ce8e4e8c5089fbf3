# Reliability: fuzzing, soak under load, memory checks. See docs/failure-behaviour.md.
#
#   make fuzz            every fuzz target for FUZZ_SECONDS each (default 300)
#   make fuzz-smoke      every fuzz target for FUZZ_SMOKE_SECONDS each (part of make test)
#   make soak            load + concurrency soak against the real Envoy for SOAK_SECONDS (default 600)
#   make soak-smoke      the same soak, short (part of make test)
#   make memcheck        envoy-module tests under AddressSanitizer, then Envoy + module under
#                        valgrind over a short scenario (part of make test; about a minute)
#
# Fuzzing and the sanitizer need a nightly toolchain (`rustup toolchain install nightly`);
# cargo-fuzz is installed from crates.io into .tools/cargo on first use.

CARGO_FUZZ_VERSION := 0.13.2
CARGO_FUZZ := $(TOOLS)/cargo/bin/cargo-fuzz
NIGHTLY ?= nightly
FUZZ_TARGETS := config render operators acl template_diff functions
FUZZ_SECONDS ?= 300
FUZZ_SMOKE_SECONDS ?= 20
SOAK_SECONDS ?= 600
SOAK_SMOKE_SECONDS ?= 60
HOST_TRIPLE := $(shell rustc -vV 2>/dev/null | sed -n 's/^host: //p')
# Instrumented builds are slow (minutes on 2 cores); kept outside the work tree so every clone
# on this machine, CI's included, shares them. Only a cache: delete it at will.
FUZZ_CACHE ?= $(HOME)/.cache/rustformations
FUZZ_TARGET_DIR ?= $(FUZZ_CACHE)/fuzz-target

.PHONY: fuzz fuzz-smoke fuzz-build soak soak-smoke memcheck memcheck-asan memcheck-valgrind

# Its build directory is cached too, so a fresh clone installs it in seconds after the first time.
$(CARGO_FUZZ):
	$(CARGO) install --locked --root $(TOOLS)/cargo --target-dir $(FUZZ_CACHE)/cargo-install \
	  cargo-fuzz --version $(CARGO_FUZZ_VERSION)

fuzz-build: $(CARGO_FUZZ) ## Build every fuzz target (nightly; installs cargo-fuzz into .tools/ on first use)
	cd fuzz && PATH="$(TOOLS)/cargo/bin:$$PATH" $(CARGO) +$(NIGHTLY) fuzz build --target-dir $(FUZZ_TARGET_DIR)

# Each run starts from the committed seeds plus the corpus kept from earlier runs; a crash
# leaves its input in fuzz/artifacts/<target>/ and fails the make.
define run_fuzz
	cd fuzz && for t in $(FUZZ_TARGETS); do \
	  mkdir -p corpus/$$t seeds/$$t; \
	  echo "fuzz $$t for $(1)s"; \
	  PATH="$(TOOLS)/cargo/bin:$$PATH" $(CARGO) +$(NIGHTLY) fuzz run --target-dir $(FUZZ_TARGET_DIR) $$t corpus/$$t seeds/$$t -- \
	    -max_total_time=$(1) -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 -dict=dicts/$$t.dict 2>&1 \
	    | grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb|==[0-9]+==|SUMMARY|thread|Done|INFO: Running|artifact)' ; \
	  test "$${PIPESTATUS[0]}" -eq 0 || exit 1; \
	done
endef

fuzz: fuzz-build ## Every fuzz target for FUZZ_SECONDS each
	$(call run_fuzz,$(FUZZ_SECONDS))

fuzz-smoke: fuzz-build ## Every fuzz target for FUZZ_SMOKE_SECONDS each (part of make test)
	$(call run_fuzz,$(FUZZ_SMOKE_SECONDS))

soak: build envoy venv ## Load and concurrency soak against the real Envoy for SOAK_SECONDS
	$(PY) tests/soak/soak.py --seconds $(SOAK_SECONDS)

soak-smoke: build envoy venv ## The same soak, short (part of make test)
	$(PY) tests/soak/soak.py --seconds $(SOAK_SMOKE_SECONDS)

# The SDK's own tests (raw pointers, FFI shapes, FakeEnvoy) under AddressSanitizer.
memcheck-asan: ## envoy-module's tests under AddressSanitizer (nightly)
	RUSTFLAGS="-Zsanitizer=address" RUSTDOCFLAGS="-Zsanitizer=address" ASAN_OPTIONS=detect_leaks=1 \
	  $(CARGO) +$(NIGHTLY) test -p envoy-module --lib --tests --target $(HOST_TRIPLE) \
	  --target-dir target/asan

memcheck-valgrind: build envoy venv ## Envoy and the module under valgrind over a short scenario
	$(PY) tests/reliability/memcheck.py

memcheck: memcheck-asan memcheck-valgrind ## memcheck-asan, then memcheck-valgrind (part of make test)

TEST_CHECKS += fuzz-smoke soak-smoke memcheck
