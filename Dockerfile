# Builds usage-authz and the two demo programs (usage-check-stub,
# demo-upstream) into one small runtime image.
#
#   docker build -t usage-authz .
#   docker run --rm -p 9001:9001 -p 9002:9002 \
#     -e USAGE_AUTHZ_USAGE_CHECK__URL=https://api.example.com/serverless/usage-check usage-authz

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# Dependencies first, so that source edits reuse the cached dependency layer.
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto proto
COPY bench/Cargo.toml bench/Cargo.toml
RUN mkdir -p src/bin bench/src \
    && echo 'fn main() {}' > src/main.rs \
    && echo '' > src/lib.rs \
    && echo 'fn main() {}' > bench/src/main.rs \
    && cargo fetch --locked
COPY src src
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked --bins -p usage-authz

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home usage-authz
COPY --from=build /src/target/release/usage-authz /src/target/release/usage-check-stub /src/target/release/demo-upstream /usr/local/bin/
USER usage-authz
# gRPC (Check and health), HTTP (metrics and probes). The admin API listens on
# 127.0.0.1:9003 unless admin.addr and admin.token are set.
EXPOSE 9001 9002
ENTRYPOINT ["/usr/local/bin/usage-authz"]
