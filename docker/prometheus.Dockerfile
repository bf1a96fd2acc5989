# The compose cluster's Prometheus: the prometheus binary of Debian's package and the shared
# libraries it links, nothing else. Built FROM scratch by `docker/build-image.sh prometheus`: no
# base image is pulled. docker-compose.yml mounts the scrape configuration
# (monitoring/prometheus.yml) at /etc/prometheus/prometheus.yml.
FROM scratch
COPY rootfs/ /
ENTRYPOINT ["/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/data", "--web.listen-address=0.0.0.0:9090"]
