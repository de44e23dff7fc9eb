# syntax=docker/dockerfile:1
# Multi-stage build: compile with cached registry and target dirs, ship a slim non-root image.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked && cp target/release/dvrgate /dvrgate

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /data dvrgate \
    && mkdir -p /data && chown dvrgate /data
COPY --from=build /dvrgate /usr/local/bin/dvrgate
COPY config/ /etc/dvrgate/
USER dvrgate
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8080 1935
STOPSIGNAL SIGTERM
ENTRYPOINT ["dvrgate"]
CMD ["serve", "--config", "/etc/dvrgate/origin.toml"]
