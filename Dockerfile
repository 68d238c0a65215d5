# The gradebook image, built from source (needs a machine that can pull
# images). docker/build-image.sh offline builds the same image from a binary
# built on the host, for machines without an image registry.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked \
 && docker/make-rootfs.sh target/release/gradebook /rootfs

FROM scratch
COPY --from=build /rootfs/ /
COPY --from=build --chown=10001:10001 /rootfs/data /data
USER 10001:10001
WORKDIR /data
ENV GRADEBOOK_LOG_LEVEL=info,h2=warn,hyper=warn,tower=warn GRADEBOOK_LOG_TO_STDOUT=true GRADEBOOK_CERTS=/data/certs
# Every daemon's health, asked on its own GRADEBOOK_LISTEN (Swarm uses it;
# the Compose file states each daemon's check itself).
HEALTHCHECK --interval=2s --timeout=3s --retries=15 CMD ["/usr/local/bin/gradebook", "health-check"]
ENTRYPOINT ["/usr/local/bin/gradebook"]
CMD ["--help"]
