# syntax=docker/dockerfile:1
# The Bulkhead node agent image: `docker build -t bulkhead/firewall-agent:0.1.0 .`
#
# For users with a Docker engine. CI builds the same image offline with podman instead
# (`cargo xtask image`: deploy/image/Containerfile, the same final stage, checked by that command)
# and runs it under the DaemonSet's settings (tests/tests/e2e_container.rs). The builder stage
# runs what CI runs, `scripts/bootstrap.sh` (the pinned toolchains of rust-toolchain.toml and
# scripts/toolchains.toml, the musl target and musl-tools, bpf-linker built against the pinned
# nightly's LLVM), then the same release build for the musl target (statically linked, whose
# build.rs compiles the eBPF object with that nightly and embeds it).
#
# Runtime: `FROM scratch`, the stripped static binary alone (no libc, shell or package manager).
# It runs as uid 0 on purpose: loading and attaching the eBPF programs needs CAP_BPF,
# CAP_NET_ADMIN and CAP_PERFMON, and Kubernetes cannot grant capabilities to a non-root user (no
# ambient capabilities in securityContext; file capabilities would need
# allowPrivilegeEscalation: true). The DaemonSet drops every other capability, sets
# no_new_privs, a read-only root filesystem and mounts the host cgroup tree read-only, so uid 0
# here is not root on the node.

FROM docker.io/library/rust:1-bookworm AS build
WORKDIR /src
# The bootstrap first (its inputs only), so that the toolchains stay cached across code changes.
COPY rust-toolchain.toml ./
COPY scripts/ scripts/
RUN bash scripts/bootstrap.sh
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    TARGET="$(uname -m)-unknown-linux-musl" \
 && env "CC_$(echo "$TARGET" | tr - _)=musl-gcc" \
    cargo build --release --locked -p firewall-agent --target "$TARGET" \
 && mkdir -p /out && strip -o /out/firewall-agent "target/$TARGET/release/firewall-agent"

FROM scratch
COPY --from=build /out/firewall-agent /usr/local/bin/firewall-agent
# Prometheus /metrics, /healthz, /readyz (--metrics-addr in deploy/daemonset.yaml).
EXPOSE 9090
USER 0:0
ENTRYPOINT ["/usr/local/bin/firewall-agent"]
CMD ["run", "--source", "kube"]
