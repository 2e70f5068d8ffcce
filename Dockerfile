# margo-proxy container image: built in a Rust image, run as a non-root user in a
# slim Debian with only the CA bundle added.
#   docker build -t margo-proxy:0.1.0 .
FROM rust:1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends cmake && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Dependencies first, so source edits do not rebuild them.
COPY Cargo.toml Cargo.lock ./
COPY benches benches
COPY examples examples
RUN mkdir src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && cargo build --release --locked --bin margo-proxy || true
COPY src src
COPY policies policies
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin margo-proxy

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 margo \
    && useradd --system --uid 10001 --gid margo --no-create-home --shell /usr/sbin/nologin margo
COPY --from=build /src/target/release/margo-proxy /usr/local/bin/margo-proxy
COPY --from=build /src/policies /usr/share/margo-proxy/policies
USER 10001:10001
EXPOSE 8080 9091
# No curl in the image: bash's /dev/tcp asks the admin listener's /healthz.
HEALTHCHECK --interval=10s --timeout=3s --retries=3 CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/9091 && printf 'GET /healthz HTTP/1.0\\r\\n\\r\\n' >&3 && head -n1 <&3 | grep -q ' 200 '"]
ENTRYPOINT ["/usr/local/bin/margo-proxy"]
CMD ["serve", "--config", "/etc/margo-proxy/margo-proxy.yaml"]
