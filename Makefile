# Helix Registry. Two commands on a fresh machine:
#   make run    start the whole registry locally (embedded backend) and print how to use it
#   make test   install what the tests need (Python venvs, the moto emulator, Chromium for the console) and run every test
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
.DEFAULT_GOAL := help

CARGO ?= cargo
LOGS := target/test-logs
# Every Lambda function: the crates under functions/ (tests/src/runtime_api.rs reads the same folder).
FUNCTIONS := $(sort $(notdir $(wildcard functions/*)))
# Lambda architecture for build-lambda/deploy: arm64 (default) or x86_64 (the fallback; see docs/deploy.md).
ARCH ?= arm64
STACK ?= helix-registry
# Extra `sam deploy --parameter-overrides`, e.g. PARAMS="GovernanceMode=warn OidcIssuer=https://idp.example OidcAudience=helix"
PARAMS ?=
SAM := SAM_CLI_TELEMETRY=0 ../.venv-infra/bin/sam
VENV_BIN := $(CURDIR)/.venv/bin

.PHONY: rehearse docs help run test test-unit test-embedded test-fuzz test-emulator test-browser emulator-start emulator-stop lint lint-rust \
	lint-iac build-lambda deploy watch bench release clean-data

help:
	@echo "make run            start helix serve on 127.0.0.1:8080 (data in ./.helix)"
	@echo "make test           unit tests, embedded suite, browser suite (console), API fuzzing, emulator suite (moto on 127.0.0.1)"
	@echo "make rehearse       offline deploy rehearsal: the template as a stack on the emulator, every function run from it, every AWS call judged as IAM would"
	@echo "make lint           cargo fmt --check, clippy -D warnings, cfn-lint, sam validate --lint, checkov"
	@echo "make build-lambda   zipped bootstrap per function in infra/build/ (ARCH=arm64|x86_64)"
	@echo "make deploy         sam deploy infra/template.yaml (STACK=..., PARAMS=..., AWS credentials)"
	@echo "make watch          cargo lambda watch against a local emulator (moto)"
	@echo "make bench          Lambda cold start and package size vs Python/boto3, governance, audit, reads, transfer, warm latency through the gateway, the console (docs/performance.md)"
	@echo "make docs           regenerate the RBAC matrix in docs/security.md"
	@echo "make release        the Lambda functions (lambda-release profile) and the CLI (release)"
	@echo "make emulator-start / emulator-stop   a long-lived moto for manual use"

run:
	$(CARGO) build -q -p helix-cli --bin helix
	$(CARGO) run -q -p helix-cli --bin helix -- serve

# One build for every suite, then the suites, the fuzzing beside the emulator suite (scripts/make-test.sh).
# The targets below run one suite each.
test:
	scripts/make-test.sh
	@echo
	@echo "== test summary =="
	@for suite in unit embedded emulator; do \
	  awk -v s=$$suite '/^test result:/ {p+=$$4; f+=$$6; n++} END {printf "%-9s %4d passed, %d failed (%d test binaries)\n", s, p, f, n; if (p == 0 || f > 0) exit 1}' $(LOGS)/$$suite.log; \
	done
	@awk '/ generated, / {g+=$$1; n++; if ($$1 == 0) empty++} END {printf "fuzz      %4d cases over docs/openapi.yaml, 0 failures (%d schemathesis runs)\n", g, n; if (n != 3 || empty > 0) exit 1}' $(LOGS)/fuzz.log
	@grep -h '^browser: .* views checked' $(LOGS)/browser.log | sed 's/^browser: /browser   /'

test-unit:
	@mkdir -p $(LOGS)
	$(CARGO) test --workspace --exclude helix-tests 2>&1 | tee $(LOGS)/unit.log

test-embedded:
	@mkdir -p $(LOGS)
	$(CARGO) test -p helix-tests --lib --bins --test embedded 2>&1 | tee $(LOGS)/embedded.log

# Schemathesis over docs/openapi.yaml against a fresh `helix serve`: every check, a fixed seed, 200
# examples per operation; any failure or 5xx fails (tests/fuzz/run.sh, tests/fuzz/schemathesis.toml).
test-fuzz:
	@mkdir -p $(LOGS)
	$(CARGO) build -p helix-cli --bin helix
	tests/fuzz/run.sh $(or $(CARGO_TARGET_DIR),target)/debug/helix 200 2>&1 | tee $(LOGS)/fuzz.log

# The console in headless Chromium against a fresh `helix serve` (tests/browser/console.py) whose OIDC
# issuer is the test identity provider (tests/src/bin/test-idp.rs): every flow,
# no browser error, axe-core clean, a screenshot of each view in target/console/. Installs what it needs
# (scripts/browser-env.sh) and fails, never skips, when the browser cannot be installed or started.
test-browser:
	@mkdir -p $(LOGS)
	scripts/browser-env.sh
	$(CARGO) build -p helix-cli --bin helix -p helix-tests --bin test-idp
	.venv-browser/bin/python tests/browser/console.py --helix $(or $(CARGO_TARGET_DIR),target)/debug/helix \
	  --out target/console 2>&1 | tee $(LOGS)/browser.log

# The emulator suite fails (never skips) if the emulator cannot be installed or started. It includes
# the Lambda conformance cases, which build the function binaries themselves (never a stale one).
test-emulator:
	@mkdir -p $(LOGS)
	localstack/venv.sh
	$(CARGO) build -p helix-tests --tests
	localstack/with-emulator.sh $(CARGO) test -p helix-tests --test emulator 2>&1 | tee $(LOGS)/emulator.log

emulator-start:
	localstack/start.sh

emulator-stop:
	localstack/stop.sh

lint: lint-rust lint-iac

lint-rust:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# The IaC tools live in their own venv (they pin a boto3 moto does not want); all run offline.
lint-iac:
	scripts/venv.sh .venv-infra infra/requirements-lint.txt
	cd infra && ../.venv-infra/bin/cfn-lint template.yaml
	cd infra && $(SAM) validate --lint -t template.yaml --region us-east-1
	cd infra && BC_SKIP_MAPPING=TRUE ../.venv-infra/bin/checkov -f template.yaml --framework cloudformation \
	  --quiet --compact --skip-download

# cargo-lambda and zig come from PyPI into the project venv; zig links for the Lambda target.
build-lambda:
	scripts/venv.sh .venv infra/requirements-build.txt
	rustup target list --installed | grep -q '^$(if $(filter arm64,$(ARCH)),aarch64,x86_64)-unknown-linux-gnu$$' || \
	  rustup target add $(if $(filter arm64,$(ARCH)),aarch64,x86_64)-unknown-linux-gnu
	PATH="$(VENV_BIN):$$PATH" $(CARGO) lambda build --profile lambda-release --$(ARCH) --output-format zip \
	  --config 'build.rustflags=["-C","target-cpu=$(if $(filter arm64,$(ARCH)),neoverse-n1,haswell)"]' \
	  --lambda-dir infra/build $(addprefix -p ,$(FUNCTIONS))
	@ls -l infra/build/*/bootstrap.zip

deploy: build-lambda
	scripts/venv.sh .venv-infra infra/requirements-lint.txt
	cd infra && $(SAM) deploy --template-file template.yaml --stack-name $(STACK) --resolve-s3 \
	  --capabilities CAPABILITY_IAM --no-fail-on-empty-changeset \
	  --parameter-overrides Architecture=$(ARCH) $(PARAMS)

# Functions as Lambdas on http://127.0.0.1:9000/lambda-url/<function>/..., AWS adapters on a
# long-lived moto (stop it with `make emulator-stop`).
watch:
	scripts/venv.sh .venv infra/requirements-build.txt
	localstack/start.sh >/dev/null
	set -a && . localstack/.state/env && set +a && PATH="$(VENV_BIN):$$PATH" $(CARGO) lambda watch \
	  --invoke-address 127.0.0.1 --invoke-port 9000

# Cold start of each function (the lambda-release profile, as deployed) under the Runtime API emulator, against moto, beside Python/boto3.
# (The harness itself is the test build; only the functions it measures are lambda-release builds.)
# Then governance on the embedded backend (a 10,000-file bundle: register, approve, export, verify),
# and the audit trail (appends per second, a 1,000,000-event day exported and verified), in process, so
# release builds of the harnesses. Then warm latency through the deploy rehearsal's gateway beside
# `helix serve` on the same emulator (infra/rehearse/latency.py). Last, the console's size and first usable view in headless Chromium
# against the release `helix serve` built for the transfer bench (tests/browser/console_bench.py).
# The transfer bench runs twice: 1 GiB and 10,000 small files, then issue 19's 6 GiB file alone, pulled
# and checked by SHA-256, with client and server peak RSS (skipped, saying so, without 19 GiB free).
# It runs before the benches that create and remove thousands of files: on an ext4 without a journal
# (this repository's machines) new files are slow to create for up to 6 minutes after many were
# removed, and the small files' push and pull would measure that (docs/performance.md).
bench:
	localstack/venv.sh
	$(CARGO) build --profile lambda-release $(addprefix -p ,$(FUNCTIONS))
	$(CARGO) build -p helix-tests --bin lambda-bench
	localstack/with-emulator.sh $(or $(CARGO_TARGET_DIR),target)/debug/lambda-bench \
	  --bin-dir $(or $(CARGO_TARGET_DIR),target)/lambda-release --python .venv/bin/python --runs 20 \
	  --out target/bench/lambda.md
	$(CARGO) build --release -p helix-cli
	scripts/transfer-bench.py --helix $(or $(CARGO_TARGET_DIR),target)/release/helix --large-mib 1024 --small-files 10000 \
	  --out target/bench/transfer.md
	scripts/transfer-bench.py --helix $(or $(CARGO_TARGET_DIR),target)/release/helix --large-mib 6144 --small-files 0 \
	  --verify --out target/bench/transfer-6g.md
	$(CARGO) build --release -p helix-tests --bin governance-bench
	$(or $(CARGO_TARGET_DIR),target)/release/governance-bench --files 10000 --out target/bench/governance.md
	$(CARGO) build --release -p helix-tests --bin audit-bench
	$(or $(CARGO_TARGET_DIR),target)/release/audit-bench --appends 5000 --events 1000000 --out target/bench/audit.md
	$(CARGO) build --release -p helix-tests --bin read-bench
	$(or $(CARGO_TARGET_DIR),target)/release/read-bench --rounds 3 --seconds 5 --clients 16 --out target/bench/reads.md
	scripts/venv.sh .venv-infra infra/requirements-lint.txt
	scripts/venv.sh .venv-rehearse infra/rehearse/requirements.txt
	.venv-rehearse/bin/python infra/rehearse/rehearse.py --target-dir $(or $(CARGO_TARGET_DIR),target) --profile lambda-release \
	  --helix $(or $(CARGO_TARGET_DIR),target)/release/helix --latency 200 --work target/bench/rehearse --latency-out target/bench/latency.md
	scripts/browser-env.sh
	.venv-browser/bin/python tests/browser/console_bench.py --helix $(or $(CARGO_TARGET_DIR),target)/release/helix \
	  --runs 15 --out target/bench/console.md

release:
	$(CARGO) build --profile lambda-release $(addprefix -p ,$(FUNCTIONS))
	$(CARGO) build --release -p helix-cli

# Regenerate the RBAC matrix in docs/security.md from the code (a test fails when they differ).
docs:
	$(CARGO) run -q -p helix-tests --bin rbac-matrix docs/security.md

clean-data:
	rm -rf -- "$${HELIX_DATA_DIR:-.helix}"

# The deploy rehearsal (infra/rehearse/rehearse.py; docs/deploy.md, "Deploy rehearsal"): offline, no
# account. Reuses the debug builds of `make test`; sam comes from the lint venv, moto with CloudFormation
# and the SAM translator from their own.
rehearse:
	$(CARGO) build -q $(addprefix -p ,$(FUNCTIONS)) -p helix-cli
	scripts/venv.sh .venv-infra infra/requirements-lint.txt
	scripts/venv.sh .venv-rehearse infra/rehearse/requirements.txt
	.venv-rehearse/bin/python infra/rehearse/rehearse.py --target-dir $(or $(CARGO_TARGET_DIR),target)
