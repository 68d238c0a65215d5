# The PostgreSQL image, from a root filesystem laid out by
# docker/make-postgres-rootfs.sh out of Debian's postgresql package on the
# host. `FROM scratch` needs no image registry: built offline, like the
# gradebook image.
FROM scratch
COPY rootfs/ /
COPY --chown=10002:10002 rootfs/var/lib /var/lib
USER 10002:10002
WORKDIR /var/lib/postgresql
ENV PATH=/usr/local/bin:/bin PGDATA=/var/lib/postgresql/data TZ=UTC
EXPOSE 5432
STOPSIGNAL SIGINT
ENTRYPOINT ["/usr/local/bin/postgres-entrypoint"]
HEALTHCHECK --interval=2s --timeout=3s --retries=15 CMD ["/usr/local/bin/pg_isready", "-h", "127.0.0.1", "-q"]
