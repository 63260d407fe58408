# syntax=docker/dockerfile:1
# Images of the two binaries, from one multi-stage build:
#   docker build --target mapper -t kubeedge-ros2/mapper:0.1.0 .
#   docker build --target bridge -t kubeedge-ros2/bridge:0.1.0 .
# Multi-arch (robots are often arm64): docker buildx build --platform linux/amd64,linux/arm64 ...
# Both run as the distroless `nonroot` user (65532) with no shell; the HEALTHCHECK uses the
# binary itself (`--healthcheck` asks its own /healthz). Kubernetes uses httpGet probes instead.

ARG RUST_VERSION=1.89
FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
# Manifests first, so the dependency layer is cached until Cargo.lock changes.
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --locked --profile dist -p mapper -p bridge \
 && install -D -m 0755 target/dist/mapper /out/mapper \
 && install -D -m 0755 target/dist/bridge /out/bridge

# glibc + libgcc only (the binaries link nothing else: TLS is rustls, protobuf is compiled in).
FROM gcr.io/distroless/cc-debian12:nonroot AS mapper
COPY --from=build /out/mapper /usr/local/bin/mapper
USER 65532:65532
EXPOSE 9464
HEALTHCHECK --interval=30s --timeout=5s CMD ["/usr/local/bin/mapper", "--config", "/etc/kubeedge-ros2/mapper.yaml", "--healthcheck"]
ENTRYPOINT ["/usr/local/bin/mapper"]
CMD ["--config", "/etc/kubeedge-ros2/mapper.yaml"]

FROM gcr.io/distroless/cc-debian12:nonroot AS bridge
COPY --from=build /out/bridge /usr/local/bin/bridge
USER 65532:65532
EXPOSE 7447 9180 9181
# The mode decides which config to ask, so the health command is given at run time, e.g.
#   docker run --health-cmd 'bridge hub --config /etc/kubeedge-ros2/hub.yaml --healthcheck' ...
ENTRYPOINT ["/usr/local/bin/bridge"]
CMD ["edge", "--config", "/etc/kubeedge-ros2/edge.yaml"]
