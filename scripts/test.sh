#!/usr/bin/env bash
# `make test`: every crate's unit tests once, then the integration suite (one test binary)
# against each containerd line users run, and the dockerd tests on containerd 2.
#
#   TEST_CONTAINERD=1.6|1.7|2   run the suite against that containerd only (default: all)
#
# containerd 1.6 is Debian bookworm's (on PATH); 1.7 and 2 are Debian trixie's and sid's,
# fetched by scripts/fetch-clients.sh under $TARGET_DIR/clients. A line that fails does not
# stop the others: every one runs, cargo prints its own summary lines for each, and the
# script fails at the end if any did.
#
# Environment (set by the Makefile): CARGO, TEST_PROFILE, TARGET_DIR, WASM_EXAMPLES_DIR,
# SHIM_BIN_DIR.
set -uo pipefail
cd "$(dirname "$0")/.."

cargo=${CARGO:-cargo}
profile=${TEST_PROFILE:?}
clients=${TARGET_DIR:?}/clients
lines=${TEST_CONTAINERD:-1.6 1.7 2}

# What a line's tests run against: its containerd's directory (empty: the system's) and,
# for containerd 2, dockerd's.
containerd_dir() {
  case $1 in
    1.6) echo "" ;;
    1.7) echo "$clients/containerd-1.7/bin" ;;
    2) echo "$clients/containerd-2/bin" ;;
    *) echo "TEST_CONTAINERD=$1: expected 1.6, 1.7 or 2" >&2; return 1 ;;
  esac
}

version_of() {
  local dir=$1
  "${dir:+$dir/}containerd" --version 2>/dev/null || echo "containerd missing${dir:+ in $dir}"
}

failed=()
summary=()
first=1
[ -n "${lines// /}" ] || { echo "TEST_CONTAINERD is empty: nothing to test" >&2; exit 2; }
for line in $lines; do
  dir=$(containerd_dir "$line") || exit 2
  version=$(version_of "$dir")
  args=(--profile "$profile" --no-fail-fast)
  filter=(--skip dockerd::)
  docker_note=""
  if [ "$line" = 2 ]; then
    # dockerd runs on a private containerd 2 (Docker 28 ships with containerd 2), so its
    # tests run once, in this line.
    filter=()
    export TEST_DOCKER_DIR="$clients/docker/bin"
    docker_note=" + $("$TEST_DOCKER_DIR/dockerd" --version 2>/dev/null || echo "dockerd missing")"
  fi
  echo
  echo "=== integration suite against $version$docker_note ==="
  if [ $first = 1 ]; then
    # The first line also runs every crate's unit tests (and builds everything once).
    scope=(--workspace)
    first=0
  else
    scope=(-p integration --test suite)
  fi
  if TEST_CONTAINERD_DIR="$dir" "$cargo" test "${args[@]}" "${scope[@]}" -- "${filter[@]}"; then
    summary+=("passed: $version$docker_note")
  else
    failed+=("$line")
    summary+=("FAILED: $version$docker_note")
  fi
  unset TEST_DOCKER_DIR
done

echo
echo "=== clients tested ==="
printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
  echo "failed against containerd ${failed[*]}"
  exit 1
fi
