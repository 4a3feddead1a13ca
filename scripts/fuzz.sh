#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a bounded time, on the stable toolchain.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET]   (default 60)
#   FUZZ_TARGETS="decode_json rawsocket_codec" scripts/fuzz.sh 30   (a subset)
#
# cargo-fuzz wants nightly for sanitizers; without one (`--sanitizer none`) the only unstable
# thing it needs is `-Z` flags, which RUSTC_BOOTSTRAP=1 allows on stable. Coverage
# instrumentation (sancov) and libFuzzer work the same; only AddressSanitizer is missing, which
# safe Rust does not need. Each target starts from its committed seed corpus in
# fuzz/corpus/<target>/ and writes what it finds to a scratch copy, so runs leave the repository
# unchanged. A crash fails the script; its input is saved under fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-60}"
if ! [[ "$seconds" =~ ^[0-9]+$ ]]; then
  echo "usage: $0 [seconds per target]" >&2
  exit 2
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz"
  cargo install --locked cargo-fuzz
fi

export RUSTC_BOOTSTRAP=1
targets="${FUZZ_TARGETS:-$(cd fuzz && cargo fuzz list)}"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

failed=()
for target in $targets; do
  echo "== $target: ${seconds}s"
  mkdir -p "$scratch/$target"
  # -s none: no sanitizer (stable). The scratch corpus comes first: new inputs go there; the
  # committed seeds are read only.
  if ! (cd fuzz && cargo fuzz run -s none "$target" "$scratch/$target" "corpus/$target" -- \
      -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1); then
    failed+=("$target")
  fi
done

if ((${#failed[@]})); then
  echo "fuzz targets that found a crash: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
  exit 1
fi
echo "every fuzz target ran ${seconds}s without a crash"
