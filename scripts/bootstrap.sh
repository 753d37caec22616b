#!/usr/bin/env bash
# Installs everything Bulkhead needs to build and test on a fresh Debian 12 machine:
# Debian packages, the pinned Rust toolchains, and bpf-linker built against the pinned
# nightly's own libLLVM (no prebuilt download is reachable). Idempotent: re-running is cheap.
# `--check` installs nothing: exit status 0 when everything is in place, 1 (naming the first missing
# piece) otherwise; `cargo xtask demo` and `cargo xtask test` use it to bootstrap only when needed.
set -euo pipefail
cd "$(dirname "$0")/.."
CHECK=0
[ "${1:-}" = --check ] && CHECK=1

EBPF_TOOLCHAIN=$(sed -n 's/^ebpf-toolchain *= *"\(.*\)"/\1/p' scripts/toolchains.toml)
USER_TOOLCHAIN=$(sed -n 's/^channel *= *"\(.*\)"/\1/p' rust-toolchain.toml)
BPF_LINKER_VERSION=$(sed -n 's/^bpf-linker *= *"\(.*\)"/\1/p' scripts/toolchains.toml)
PREFIX="${BULKHEAD_TOOLS:-$HOME/.cache/bulkhead/llvm-$EBPF_TOOLCHAIN}"

log() { printf '[bootstrap] %s\n' "$*" >&2; }
# In check mode, the first missing piece ends the run with status 1.
absent() { if [ "$CHECK" -eq 1 ]; then log "missing: $*"; exit 1; fi; }

# Debian packages: iproute2 (netns, veth, bridge), ping, iperf3, bpftool, iptables for tests/benches.
# python3-venv for the manifest checks' virtualenv. podman and runc for the container test (e2e_container).
PKGS=(iproute2 iputils-ping iperf3 bpftool iptables procps util-linux libcap2-bin python3-venv podman runc)
missing=()
for p in "${PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ "${#missing[@]}" -gt 0 ]; then
  absent "Debian packages ${missing[*]}"
  if [ "$(id -u)" -eq 0 ]; then
    log "installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    log "WARNING: not root; cannot install Debian packages: ${missing[*]}"
  fi
fi

# Rust toolchains: user space is pinned by rust-toolchain.toml, the eBPF nightly by scripts/toolchains.toml.
rustup toolchain list | grep -q "^$USER_TOOLCHAIN" || {
  absent "Rust $USER_TOOLCHAIN"
  log "installing Rust $USER_TOOLCHAIN"
  rustup toolchain install "$USER_TOOLCHAIN" --profile minimal --component rustfmt,clippy
}
# The agent image (`cargo xtask image`, e2e_container) holds a static musl build.
rustup target list --toolchain "$USER_TOOLCHAIN" --installed 2>/dev/null | grep -q x86_64-unknown-linux-musl || {
  absent "Rust target x86_64-unknown-linux-musl"
  log "adding the x86_64-unknown-linux-musl target to Rust $USER_TOOLCHAIN"
  rustup target add --toolchain "$USER_TOOLCHAIN" x86_64-unknown-linux-musl
}
rustup component list --toolchain "$EBPF_TOOLCHAIN" --installed 2>/dev/null | grep -q rust-src || {
  absent "Rust $EBPF_TOOLCHAIN with rust-src"
  log "installing Rust $EBPF_TOOLCHAIN with rust-src"
  rustup toolchain install "$EBPF_TOOLCHAIN" --profile minimal --component rust-src
}

# bpf-linker, linked against the nightly's libLLVM (its LLVM major must match the nightly's).
if ! command -v bpf-linker >/dev/null 2>&1 || ! bpf-linker --version 2>/dev/null | grep -q "$BPF_LINKER_VERSION"; then
  absent "bpf-linker $BPF_LINKER_VERSION"
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
if ! cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
  absent "cargo-fuzz $CARGO_FUZZ_VERSION"
  log "installing cargo-fuzz $CARGO_FUZZ_VERSION"
  cargo +"$USER_TOOLCHAIN" install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked >&2
fi
# kubernetes-validate (and jsonschema) for `cargo xtask manifests`, pinned, in a venv; offline afterwards.
VENV="${BULKHEAD_VENV:-$HOME/.cache/bulkhead/venv}"
REQS=scripts/requirements-manifests.txt
if ! cmp -s "$REQS" "$VENV/.requirements" 2>/dev/null; then
  absent "the manifest checkers in $VENV"
  log "installing the manifest checkers into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check -r "$REQS"
  cp "$REQS" "$VENV/.requirements"
fi

[ "$CHECK" -eq 1 ] && exit 0
log "ready: $(rustc +"$USER_TOOLCHAIN" --version), $(rustc +"$EBPF_TOOLCHAIN" --version), $(bpf-linker --version)"
