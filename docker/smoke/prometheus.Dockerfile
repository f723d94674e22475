# Prometheus from Debian's own package, for the smoke test on hosts that cannot pull
# prom/prometheus from a registry. BASE_IMAGE is the smoke's Debian base (base_image.py).
# Used in place of the compose file's prom/prometheus image (compose.smoke.yml): same binary
# name on the entrypoint, same flags, same /prometheus data directory, non-root.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /prometheus \
    && chown prometheus:prometheus /prometheus
USER prometheus
WORKDIR /prometheus
EXPOSE 9090
ENTRYPOINT ["/usr/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
