#!/usr/bin/env bash
# `make test`: every suite, from one build, independent suites side by side (docs/performance.md).
#   1. the Python venvs install (moto, Schemathesis) and the browser suite's tools (Chromium,
#      Selenium, axe-core: scripts/browser-env.sh) while cargo builds `helix` first, then every test
#      binary and every binary once (`cargo test --workspace --no-run` and `cargo build --workspace
#      --bins`: the feature pins in Cargo.toml give every cargo command the same feature set, so
#      nothing below compiles again);
#   2. the Schemathesis fuzzing (its own `helix serve`, a copy of the binary) starts as soon as `helix`
#      and the fuzz venv are there, and runs beside everything after it: it is one Python process, the
#      longest single job of the run, and would otherwise be the run's tail;
#   3. the unit tests, then the embedded suite, with the browser suite (headless Chromium through the
#      console against its own `helix serve`: tests/browser/console.py) beside them;
#   4. the emulator suite (one moto for the whole suite, localstack/with-emulator.sh), then whatever is
#      left of the fuzzing.
# Every suite writes target/test-logs/SUITE.log; the Makefile's summary reads them. Any failure fails.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
cargo=${CARGO:-cargo}
target=${CARGO_TARGET_DIR:-target}
logs=target/test-logs
mkdir -p "$logs"
rm -f "$logs"/{build,venvs,unit,embedded,fuzz,emulator,browser}.log
timings=()
started=$(date +%s)
mark=$started
phase() { # NAME: record how long the phase that just ended took
  local now
  now=$(date +%s)
  timings+=("$(printf '%-34s %4ds' "$1" $((now - mark)))")
  mark=$now
}

scripts/venv.sh .venv-fuzz tests/fuzz/requirements.txt >"$logs/venvs.log" 2>&1 &
fuzz_venv=$!
(localstack/venv.sh && scripts/browser-env.sh) >>"$logs/venvs.log" 2>&1 &
venvs=$!
fuzz=""
stop_fuzz() { [ -z "$fuzz" ] || kill "$fuzz" 2>/dev/null || true; }
trap stop_fuzz EXIT
$cargo build -p helix-cli --bin helix 2>&1 | tee "$logs/build.log"
phase "build of helix (venvs installed meanwhile)"
if ! wait "$fuzz_venv"; then
  cat "$logs/venvs.log" >&2
  echo "make test: the fuzzing's venv did not install" >&2
  exit 1
fi
# A copy: the build below must not replace the binary the fuzzing's server runs.
cp "$target/debug/helix" "$target/debug/helix-fuzz"
fuzz_started=$(date +%s)
tests/fuzz/run.sh "$target/debug/helix-fuzz" 200 >"$logs/fuzz.log" 2>&1 &
fuzz=$!
{
  $cargo test --workspace --no-run
  $cargo build --workspace --bins
} 2>&1 | tee -a "$logs/build.log"
phase "build of the rest (fuzz alongside)"
if ! wait "$venvs"; then
  cat "$logs/venvs.log" >&2
  echo "make test: the Python venvs or the browser suite's tools did not install" >&2
  exit 1
fi
phase "venvs (rest of the install)"

.venv-browser/bin/python tests/browser/console.py --helix "$target/debug/helix" --out target/console \
  >"$logs/browser.log" 2>&1 &
browser=$!
trap 'kill "$browser" 2>/dev/null || true; stop_fuzz' EXIT
$cargo test --workspace --exclude helix-tests 2>&1 | tee "$logs/unit.log"
phase "unit (browser, fuzz alongside)"
$cargo test -p helix-tests --lib --bins --test embedded 2>&1 | tee "$logs/embedded.log"
phase "embedded (browser, fuzz alongside)"
browser_status=0
wait "$browser" || browser_status=$?
trap stop_fuzz EXIT
phase "browser (rest)"
echo
echo "== browser (target/test-logs/browser.log; screenshots in target/console/) =="
grep -E '^browser: ' "$logs/browser.log" || tail -n 40 "$logs/browser.log"
[ "$browser_status" -eq 0 ] || { tail -n 60 "$logs/browser.log" >&2; echo "make test: the browser suite failed" >&2; exit 1; }

emulator=0
localstack/with-emulator.sh $cargo test -p helix-tests --test emulator 2>&1 | tee "$logs/emulator.log" || emulator=$?
phase "emulator (fuzz alongside)"
fuzz_status=0
wait "$fuzz" || fuzz_status=$?
trap - EXIT
fuzz_seconds=$(($(date +%s) - fuzz_started))
phase "fuzz (rest, after the emulator suite)"
echo
echo "== fuzz (target/test-logs/fuzz.log, ${fuzz_seconds}s) =="
grep -E ' generated, |Failures|FAILED|Error' "$logs/fuzz.log" || tail -n 30 "$logs/fuzz.log"

echo
echo "== test phases =="
printf '%s\n' "${timings[@]}"
printf '%-34s %4ds\n' "total" $(($(date +%s) - started))
[ "$emulator" -eq 0 ] || { echo "make test: the emulator suite failed" >&2; exit 1; }
[ "$fuzz_status" -eq 0 ] || { tail -n 60 "$logs/fuzz.log" >&2; echo "make test: the fuzz suite failed" >&2; exit 1; }
