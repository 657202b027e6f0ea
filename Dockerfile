# syntax=docker/dockerfile:1
# pizza-api container image: `docker build -t pizza-api:1.0.0 .` (make image).
# Build stage: the release binary, with the dependencies compiled in their
# own layer so that a change to src/ or sql/ does not rebuild them.
FROM rust:1.95-bookworm AS build
WORKDIR /src

# Dependencies first: a placeholder library and binary against the real
# Cargo.toml and Cargo.lock. This layer is reused until those two change.
COPY Cargo.toml Cargo.lock ./
# Build settings (SQLite's compile flags) apply to the dependencies too.
COPY .cargo ./.cargo
RUN mkdir src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src

# The real sources. sql/ is embedded with include_str!, so it must be here.
# The touch makes cargo rebuild the crate over the placeholder's artefacts
# (COPY keeps the files' own, possibly older, modification times).
COPY src ./src
COPY sql ./sql
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked \
    && mkdir -p /out/data \
    && cp target/release/pizza-api /out/pizza-api

# Runtime stage: glibc and libgcc only (SQLite is compiled in, no OpenSSL),
# no shell, no package manager; runs as the image's nonroot user 65532.
FROM gcr.io/distroless/cc-debian12:nonroot

LABEL org.opencontainers.image.title="pizza-api" \
      org.opencontainers.image.description="A small, fast REST service for managing pizzas, protected by OAuth2 client-credentials tokens, on SQLite or PostgreSQL" \
      org.opencontainers.image.version="1.0.0" \
      org.opencontainers.image.licenses="MIT"

COPY --from=build /out/pizza-api /usr/local/bin/pizza-api
# An empty directory owned by the runtime user, for the SQLite default below
# (the runtime image has no shell to create it with).
COPY --from=build --chown=65532:65532 /out/data /data

# Listen on all interfaces inside the container. SQLite is the default
# driver; set DB_DRIVER=postgres and the DB_* variables for PostgreSQL.
ENV APP_HOST=0.0.0.0 \
    APP_PORT=8080 \
    DB_PATH=/data/pizza.sqlite
VOLUME ["/data"]
EXPOSE 8080
USER 65532:65532

# No curl in the image: the binary checks its own /health on APP_PORT.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["/usr/local/bin/pizza-api", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/pizza-api"]
CMD ["serve"]
