# The runtime image, from a root filesystem laid out by docker/make-rootfs.sh.
# `FROM scratch` needs no image registry: this is the offline build.
FROM scratch
COPY rootfs/ /
COPY --chown=10001:10001 rootfs/data /data
USER 10001:10001
WORKDIR /data
ENV GRADEBOOK_LOG_LEVEL=info,h2=warn,hyper=warn,tower=warn GRADEBOOK_LOG_TO_STDOUT=true GRADEBOOK_CERTS=/data/certs
# Every daemon's health, asked on its own GRADEBOOK_LISTEN (Swarm uses it;
# the Compose file states each daemon's check itself).
HEALTHCHECK --interval=2s --timeout=3s --retries=15 CMD ["/usr/local/bin/gradebook", "health-check"]
ENTRYPOINT ["/usr/local/bin/gradebook"]
CMD ["--help"]
