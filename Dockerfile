# syntax=docker/dockerfile:1
#
# Multi-stage build of the `ticketing` binary.
#   docker build -t ticketing .
#   docker run --rm -p 3000:3000 -e DATABASE_URL=... -e REDIS_URL=... ticketing [serve|migrate] [--mode all|http|worker]
#
# Compiling needs no database: the sqlx query metadata is committed in .sqlx/ and
# SQLX_OFFLINE=true (also set in .cargo/config.toml). TLS is rustls (aws-lc-rs, built with
# the C compiler the rust image ships), so neither stage needs OpenSSL.

ARG RUST_VERSION=1.95

# ---- builder ------------------------------------------------------------------------------
FROM rust:${RUST_VERSION}-slim-bookworm AS builder
WORKDIR /build
ENV SQLX_OFFLINE=true \
    CARGO_TERM_COLOR=never

# 1. Dependencies only: the real manifest and lockfile with stub sources, so this layer is
#    rebuilt only when Cargo.toml / Cargo.lock change. Any explicit target path declared in
#    Cargo.toml (a future [[bench]] or [[test]]) gets a stub too, or cargo would refuse the
#    manifest. Afterwards the stub crate's own artifacts are deleted so the real sources are
#    always recompiled.
COPY Cargo.toml Cargo.lock ./
COPY .cargo/ .cargo/
RUN set -eu; \
    mkdir -p src; \
    : > src/lib.rs; \
    echo 'fn main() {}' > src/main.rs; \
    for p in $(sed -n 's/^[[:space:]]*path[[:space:]]*=[[:space:]]*"\([^"]*\.rs\)".*/\1/p' Cargo.toml); do \
      [ -e "$p" ] || { mkdir -p "$(dirname "$p")"; echo 'fn main() {}' > "$p"; }; \
    done; \
    cargo build --release --locked; \
    rm -rf src target/release/ticketing target/release/deps/ticketing-* \
           target/release/deps/libticketing-* target/release/.fingerprint/ticketing-*

# 2. The application. migrations/ (embedded by sqlx::migrate!) and .sqlx/ (offline query
#    metadata) must be present before this build.
COPY migrations/ migrations/
COPY .sqlx/ .sqlx/
COPY src/ src/
# COPY keeps the context's mtimes, which can be older than the stub build's outputs.
RUN set -eu; \
    find src migrations -type f -exec touch {} +; \
    cargo build --release --locked; \
    cp target/release/ticketing /usr/local/bin/ticketing; \
    /usr/local/bin/ticketing --help

# ---- runtime ------------------------------------------------------------------------------
FROM debian:bookworm-slim AS runtime

# ca-certificates: rustls verifies Paystack / Resend / Cloudinary against the system roots.
# curl: only for the HEALTHCHECK below.
RUN set -eu; \
    apt-get update; \
    apt-get install -y --no-install-recommends ca-certificates curl; \
    rm -rf /var/lib/apt/lists/*; \
    groupadd --system --gid 10001 ticketing; \
    useradd --system --uid 10001 --gid ticketing --home-dir /app --no-create-home \
            --shell /usr/sbin/nologin ticketing; \
    mkdir -p /app/uploads; \
    chown -R ticketing:ticketing /app

COPY --from=builder /usr/local/bin/ticketing /usr/local/bin/ticketing

WORKDIR /app
USER ticketing:ticketing

ENV BIND_ADDRESS=0.0.0.0 \
    PORT=3000 \
    UPLOAD_DIR=/app/uploads

EXPOSE 3000
# Posters are written to /app/uploads when Cloudinary is unset: mount a volume there.

# Liveness only (/health/ready also needs Postgres and Redis). A worker-only process
# (RUN_MODE=worker or `--mode worker`) has no HTTP listener, so it reports healthy.
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
  CMD case "$(echo "${RUN_MODE:-}" | tr A-Z a-z)" in worker|workers) exit 0;; esac; \
      tr '\0' ' ' < /proc/1/cmdline | grep -Eiq -- '--mode +workers?( |$)' && exit 0; \
      curl -fsS -o /dev/null "http://127.0.0.1:${PORT:-3000}/health/live" || exit 1

ENTRYPOINT ["/usr/local/bin/ticketing"]
CMD ["serve"]
