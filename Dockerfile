# syntax=docker/dockerfile:1
# The Bulkhead node agent image: `docker build -t bulkhead/firewall-agent:0.1.0 .`
#
# NOT BUILT IN CI: the development machines have a Docker client but no engine. The builder stage
# therefore runs exactly what CI runs on every submission, `scripts/bootstrap.sh` (the pinned
# toolchains of rust-toolchain.toml and scripts/toolchains.toml, bpf-linker built against the
# pinned nightly's LLVM), and the same `cargo build -p firewall-agent` (whose build.rs compiles
# the eBPF object with that nightly and embeds it), so each step is exercised indirectly.
#
# `cargo xtask image` builds the same layout offline with podman (deploy/image/Containerfile: FROM
# scratch and a static musl build of the same binary, same path, entrypoint and CMD).
#
# Runtime: distroless/cc (glibc and libgcc only, no shell, no package manager). It runs as uid 0
# on purpose: loading and attaching the eBPF programs needs CAP_BPF, CAP_NET_ADMIN and
# CAP_PERFMON, and Kubernetes cannot grant capabilities to a non-root user (no ambient
# capabilities in securityContext; file capabilities would need allowPrivilegeEscalation: true).
# The DaemonSet drops every other capability, sets no_new_privs, a read-only root filesystem and
# mounts the host cgroup tree read-only, so uid 0 here is not root on the node.

FROM docker.io/library/rust:1-bookworm AS build
WORKDIR /src
# The bootstrap first (its inputs only), so that the toolchains stay cached across code changes.
COPY rust-toolchain.toml ./
COPY scripts/ scripts/
RUN bash scripts/bootstrap.sh
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p firewall-agent \
 && install -D -m 0755 target/release/firewall-agent /out/firewall-agent

FROM gcr.io/distroless/cc-debian12
COPY --from=build /out/firewall-agent /usr/local/bin/firewall-agent
# Prometheus /metrics, /healthz, /readyz (--metrics-addr in deploy/daemonset.yaml).
EXPOSE 9090
USER 0:0
ENTRYPOINT ["/usr/local/bin/firewall-agent"]
CMD ["run", "--source", "kube"]
