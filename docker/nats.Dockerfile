# NATS with JetStream for Bootfleet, from Debian's nats-server package (no registry needed):
#   docker build -f docker/nats.Dockerfile -t bootfleet-nats .
#   docker run -v ./nats-users.conf:/etc/nats/users.conf:ro -v nats-data:/data bootfleet-nats
# users.conf is the `authorization` block `bootfleet nats-config --out` writes (bcrypt hashes of a
# `services` login and one permissioned login per distributor site); without it nats-server refuses
# to start, so this server is never open without logins.
ARG BASE=debian:trixie-slim
FROM ${BASE}

# The nats user first, with a fixed system uid (Kubernetes' runAsUser, volume ownership); the package
# takes the existing user. (Exact Debian revisions are not pinned: see builder.Dockerfile.)
# hadolint ignore=DL3008
RUN useradd --system --uid 990 --user-group --home-dir /data --no-create-home \
      --shell /usr/sbin/nologin nats \
 && apt-get update \
 && apt-get install -y --no-install-recommends nats-server \
 && rm -rf /var/lib/apt/lists/* \
 && install -d -o nats -g nats -m 0750 /data
COPY docker/nats/nats-server.conf /etc/nats/nats-server.conf

USER 990:990
VOLUME ["/data"]
EXPOSE 4222 8222
# The monitoring port's health, JetStream included; bash's /dev/tcp, as the image has no HTTP client.
# A node of a new cluster can report "no contact with a meta leader" for a while after the
# leader is elected (seen once in CI, 2026-12-05, nats-server 2.10.27): failures in the first
# 30 s do not count, and a passing check still marks the node healthy at once.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8222 && printf 'GET /healthz HTTP/1.0\\r\\n\\r\\n' >&3 && head -n1 <&3 | grep -q ' 200 '"]
ENTRYPOINT ["nats-server", "-c", "/etc/nats/nats-server.conf"]
