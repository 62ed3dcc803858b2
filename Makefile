# Helix Registry. Two commands on a fresh machine:
#   make run    start the whole registry locally (embedded backend) and print how to use it
#   make test   install what the tests need (Python venv + moto emulator) and run every test
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
.DEFAULT_GOAL := help

CARGO ?= cargo
LOGS := target/test-logs

.PHONY: docs help run test test-unit test-embedded test-emulator emulator-start emulator-stop lint release clean-data

help:
	@echo "make run            start helix serve on 127.0.0.1:8080 (data in ./.helix)"
	@echo "make test           unit tests, embedded suite, emulator suite (moto on 127.0.0.1)"
	@echo "make lint           cargo fmt --check and cargo clippy -D warnings"
	@echo "make docs           regenerate the RBAC matrix in docs/security.md"
	@echo "make release        release build of the Lambda functions and the CLI"
	@echo "make emulator-start / emulator-stop   a long-lived moto for manual use"

run:
	$(CARGO) build -q -p helix-cli --bin helix
	$(CARGO) run -q -p helix-cli --bin helix -- serve

test: test-unit test-embedded test-emulator
	@echo
	@echo "== test summary =="
	@for suite in unit embedded emulator; do \
	  awk -v s=$$suite '/^test result:/ {p+=$$4; f+=$$6; n++} END {printf "%-9s %4d passed, %d failed (%d test binaries)\n", s, p, f, n; if (p == 0 || f > 0) exit 1}' $(LOGS)/$$suite.log; \
	done

test-unit:
	@mkdir -p $(LOGS)
	$(CARGO) test --workspace --exclude helix-tests 2>&1 | tee $(LOGS)/unit.log

test-embedded:
	@mkdir -p $(LOGS)
	$(CARGO) test -p helix-tests --lib --bins --test embedded 2>&1 | tee $(LOGS)/embedded.log

# The emulator suite fails (never skips) if the emulator cannot be installed or started.
test-emulator:
	@mkdir -p $(LOGS)
	localstack/venv.sh
	$(CARGO) build -p helix-tests --tests
	localstack/with-emulator.sh $(CARGO) test -p helix-tests --test emulator 2>&1 | tee $(LOGS)/emulator.log

emulator-start:
	localstack/start.sh

emulator-stop:
	localstack/stop.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

release:
	$(CARGO) build --release -p publish -p fetch -p health -p helix-cli

# Regenerate the RBAC matrix in docs/security.md from the code (a test fails when they differ).
docs:
	$(CARGO) run -q -p helix-tests --bin rbac-matrix docs/security.md

clean-data:
	rm -rf .helix
