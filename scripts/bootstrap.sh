#!/usr/bin/env bash
# Installs everything Bulkhead needs to build and test on a fresh Debian 12 machine:
# Debian packages, the pinned Rust toolchains, and bpf-linker built against the pinned
# nightly's own libLLVM (no prebuilt download is reachable). Idempotent: re-running is cheap.
# `--check` installs nothing: it lists what is missing and exits 1 if anything is (`cargo xtask demo`
# and `cargo xtask test` run it first, and the full script only when it fails).
set -euo pipefail
cd "$(dirname "$0")/.."
CHECK=0
[ "${1:-}" = "--check" ] && CHECK=1

EBPF_TOOLCHAIN=$(sed -n 's/^ebpf-toolchain *= *"\(.*\)"/\1/p' scripts/toolchains.toml)
USER_TOOLCHAIN=$(sed -n 's/^channel *= *"\(.*\)"/\1/p' rust-toolchain.toml)
BPF_LINKER_VERSION=$(sed -n 's/^bpf-linker *= *"\(.*\)"/\1/p' scripts/toolchains.toml)
PREFIX="${BULKHEAD_TOOLS:-$HOME/.cache/bulkhead/llvm-$EBPF_TOOLCHAIN}"

log() { printf '[bootstrap] %s\n' "$*" >&2; }
# In --check mode: records a missing piece and skips its installation.
absent=()
need() {
  if [ "$CHECK" -eq 1 ]; then absent+=("$1"); return 1; fi
  return 0
}

# Debian packages: iproute2 (netns, veth, bridge), ping, iperf3, bpftool, iptables for tests/benches.
# python3-venv for the manifest checks' virtualenv.
PKGS=(iproute2 iputils-ping iperf3 bpftool iptables procps util-linux libcap2-bin python3-venv)
missing=()
for p in "${PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ "${#missing[@]}" -gt 0 ] && need "Debian packages: ${missing[*]}"; then
  if [ "$(id -u)" -eq 0 ]; then
    log "installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    log "WARNING: not root; cannot install Debian packages: ${missing[*]}"
  fi
fi

# Rust toolchains: user space is pinned by rust-toolchain.toml, the eBPF nightly by scripts/toolchains.toml.
rustup toolchain list | grep -q "^$USER_TOOLCHAIN" || ! need "Rust $USER_TOOLCHAIN" || {
  log "installing Rust $USER_TOOLCHAIN"
  rustup toolchain install "$USER_TOOLCHAIN" --profile minimal --component rustfmt,clippy
}
rustup component list --toolchain "$EBPF_TOOLCHAIN" --installed 2>/dev/null | grep -q rust-src ||
  ! need "Rust $EBPF_TOOLCHAIN with rust-src" || {
  log "installing Rust $EBPF_TOOLCHAIN with rust-src"
  rustup toolchain install "$EBPF_TOOLCHAIN" --profile minimal --component rust-src
}

# bpf-linker, linked against the nightly's libLLVM (its LLVM major must match the nightly's).
if { ! command -v bpf-linker >/dev/null 2>&1 || ! bpf-linker --version 2>/dev/null | grep -q "$BPF_LINKER_VERSION"; } &&
  need "bpf-linker $BPF_LINKER_VERSION"; then
  LLVM_MAJOR=$(rustc +"$EBPF_TOOLCHAIN" -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
  LIB=$(rustc +"$EBPF_TOOLCHAIN" --print sysroot)/lib
  mkdir -p "$PREFIX/lib"
  for f in "$LIB"/libLLVM.so*; do ln -sf "$f" "$PREFIX/lib/"; done
  ln -sf "$(ls "$LIB"/libLLVM.so.* | head -n1)" "$PREFIX/lib/libLLVM.so"
  log "building bpf-linker $BPF_LINKER_VERSION against LLVM $LLVM_MAJOR from $EBPF_TOOLCHAIN (about a minute)"
  LLVM_PREFIX="$PREFIX" cargo +"$USER_TOOLCHAIN" install bpf-linker --version "$BPF_LINKER_VERSION" --locked \
    --no-default-features --features "llvm-$LLVM_MAJOR" >&2
fi
# cargo-fuzz for `cargo xtask fuzz` (the fuzz targets run bounded in CI).
CARGO_FUZZ_VERSION=0.13.2
if ! cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION" && need "cargo-fuzz $CARGO_FUZZ_VERSION"; then
  log "installing cargo-fuzz $CARGO_FUZZ_VERSION"
  cargo +"$USER_TOOLCHAIN" install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked >&2
fi
# kubernetes-validate (and jsonschema) for `cargo xtask manifests`, pinned, in a venv; offline afterwards.
VENV="${BULKHEAD_VENV:-$HOME/.cache/bulkhead/venv}"
REQS=scripts/requirements-manifests.txt
if ! cmp -s "$REQS" "$VENV/.requirements" 2>/dev/null && need "the manifest checkers in $VENV"; then
  log "installing the manifest checkers into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check -r "$REQS"
  cp "$REQS" "$VENV/.requirements"
fi

if [ "$CHECK" -eq 1 ]; then
  [ "${#absent[@]}" -eq 0 ] && exit 0
  for a in "${absent[@]}"; do log "missing: $a"; done
  exit 1
fi
log "ready: $(rustc +"$USER_TOOLCHAIN" --version), $(rustc +"$EBPF_TOOLCHAIN" --version), $(bpf-linker --version)"
