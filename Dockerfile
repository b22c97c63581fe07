# syntax=docker/dockerfile:1
# The base images; deploy/check-container.sh passes locally made ones (no
# registry is reachable where it runs).
ARG RUST_IMAGE=rust:1.89-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

# Build stage: the release binary.
FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY vendor ./vendor
COPY src ./src
COPY tests ./tests
COPY benches ./benches
RUN cargo build --release --locked --bin weir

# Runtime stage: a slim image with the binary, run as a non-root user.
FROM ${RUNTIME_IMAGE}
RUN useradd --system --uid 10001 --home-dir /var/lib/weir --create-home weir \
    && mkdir -p /var/lib/weir/data && chown -R weir:weir /var/lib/weir
COPY --from=build /src/target/release/weir /usr/local/bin/weir
USER weir
WORKDIR /var/lib/weir
ENV WEIR_DATA_DIR=/var/lib/weir/data \
    WEIR_LISTEN=0.0.0.0:9092 \
    WEIR_HTTP_LISTEN=0.0.0.0:9644 \
    WEIR_LOG_FORMAT=json
VOLUME ["/var/lib/weir/data"]
EXPOSE 9092 9644
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["weir", "health", "--http-listen", "127.0.0.1:9644"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["weir"]
