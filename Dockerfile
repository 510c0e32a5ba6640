# redis-flusher as a container image: `docker build .` or `podman build .` (Containerfile is a
# symlink to this file; not the other way round, because BuildKit fails on a Dockerfile that is
# a symlink: moby/buildkit#2119). Where the base images cannot be pulled,
# deploy/container/build-local.sh builds this same file against local stand-ins of them.
#
#   docker build --build-arg VERSION=0.3.0 -t redis-flusher:0.3.0 .
#   docker run --rm --env-file flusher.env redis-flusher:0.3.0 check    # will a flush work?
#   docker run --rm --env-file flusher.env redis-flusher:0.3.0          # `run`, the default
#
# (docker's --env-file takes KEY=value lines as they are: no quotes, no ${VAR}; or mount the
# file and pass `--env-file /path/in/the/container` to redis-flusher, which reads it as
# python-dotenv does. docs/containers.md has the rest.)
#
# The build stage is Debian bookworm so that the binary needs no newer glibc than the runtime
# stage's (Debian 12, glibc 2.36). RUST_VERSION is the project's rust-version by default; any
# later 1.x-slim-bookworm tag works too.
ARG RUST_VERSION=1.88

FROM docker.io/library/rust:${RUST_VERSION}-slim-bookworm AS build
WORKDIR /src
COPY . .
# The cache mounts keep the crates and the compiled dependencies between builds (BuildKit and
# buildah/podman both take them); the binary is copied out of the target cache in the same step.
# Stripped here, whatever the release profile says, so the image never carries debug info.
RUN --mount=type=cache,id=redis-flusher-cargo-registry,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,id=redis-flusher-target,target=/src/target,sharing=locked \
    cargo build --locked --release \
    && install -D -m 0755 target/release/redis-flusher /out/usr/local/bin/redis-flusher \
    && strip --strip-all /out/usr/local/bin/redis-flusher \
    && /out/usr/local/bin/redis-flusher --version

# glibc, libgcc_s, the CA roots at /etc/ssl/certs/ca-certificates.crt, /etc/passwd with
# nonroot (65532), no shell: nothing may RUN in this stage.
FROM gcr.io/distroless/cc-debian12:nonroot
ARG VERSION=dev
ARG REVISION=unknown
# FIXME: the project's public repository, once it has one (or pass --build-arg SOURCE=...).
ARG SOURCE=https://example.invalid/redis-flusher
LABEL org.opencontainers.image.title="redis-flusher" \
      org.opencontainers.image.description="Moves URL hit counters from Redis into PostgreSQL, exactly once" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="MIT"
# Owned by root, not writable by the user that runs it.
COPY --from=build /out/usr/local/bin/redis-flusher /usr/local/bin/redis-flusher
# distroless's nonroot user, numeric so that Kubernetes' runAsNonRoot can check it.
USER 65532:65532
WORKDIR /home/nonroot
ENTRYPOINT ["/usr/local/bin/redis-flusher"]
CMD ["run"]
