# The Prometheus image, from a root filesystem laid out by
# docker/make-prometheus-rootfs.sh out of Debian's prometheus package on the
# host. `FROM scratch` needs no image registry: built offline, like the
# gradebook image. It runs as uid 10001, the daemons' uid, to read the
# `certs` volume.
FROM scratch
COPY rootfs/ /
# data/ holds only /prometheus: --chown reaches what a source directory
# holds, not the directory itself.
COPY --chown=10001:10001 data/ /
USER 10001:10001
WORKDIR /prometheus
EXPOSE 9090
ENTRYPOINT ["/usr/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus", \
     "--web.listen-address=0.0.0.0:9090"]
