# The supermq image: our statically linked binary and the default configuration, nothing else.
#
# Build it with `./docker.sh build`: that compiles the static binary, checks it really is static,
# and hands this file a build context holding only `supermq` and `appserver.conf` (so the build
# never uploads the repository or its multi-gigabyte target directory to the engine). There is
# no image registry here, so there is no base image either: FROM scratch has no shell, no libc
# and no users, and the binary needs none of them.
#
# Configure a container with SUPERMQ_<SECTION>_<KEY> environment variables (README,
# "Configuration"); they win over /etc/supermq/appserver.conf. Mount your own file over it for
# larger changes. TLS files mounted into the container must be readable by user 65534.
FROM scratch

COPY supermq /supermq
COPY appserver.conf /etc/supermq/appserver.conf
# An empty directory owned by the broker's user, so the volume starts writable for it.
COPY --chown=65534:65534 data /var/lib/supermq

# MQTT over WebSocket on as well as TCP: browsers are among the clients of a container.
ENV SUPERMQ_MQTT_WS=0.0.0.0:8083

# The store ([storage], README "Persistence"): persistent sessions, their queued messages and
# retained messages, in /var/lib/supermq/supermq.redb, acknowledged to publishers once on disk.
# A volume, so that it outlives the container: mount a named volume there
# (`-v supermq-data:/var/lib/supermq`) to keep it across `docker rm`; SUPERMQ_STORAGE_DIR=""
# runs in memory only.
ENV SUPERMQ_STORAGE_DIR=/var/lib/supermq
VOLUME /var/lib/supermq

# 1883 MQTT, 8883 MQTT over TLS, 8083/8084 MQTT over WebSocket / secure WebSocket,
# 9999 cluster routes, 11883 HTTP admin API. TLS, routes and HTTP are off until configured.
EXPOSE 1883 8883 8083 8084 9999 11883

# No root inside the container: every port is above 1024.
USER 65534:65534

# `supermq health` dials the node's own [mqtt] tcp listener, read from the same file and
# environment as the broker, and exits 0 on a successful CONNACK.
HEALTHCHECK --interval=5s --timeout=4s --start-period=10s --retries=3 \
    CMD ["/supermq", "health", "-c", "/etc/supermq/appserver.conf"]

# `docker run supermq:latest` runs the broker; `docker run supermq:latest sub -h HOST -t '#'`
# runs a client tool instead.
ENTRYPOINT ["/supermq"]
CMD ["-c", "/etc/supermq/appserver.conf"]
