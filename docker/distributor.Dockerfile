# The site agent. On a site's LAN host:
#   docker run -d --name bootfleet-distributor --restart unless-stopped --network host \
#     --cap-drop ALL --cap-add NET_BIND_SERVICE --cap-add NET_RAW \
#     --env-file /etc/bootfleet/distributor.env -v bootfleet-distributor-cache:/var/cache/bootfleet-distributor \
#     bootfleet-distributor serve --interface eth0 --server-ip 192.0.2.10
# (distributor.env: the NATS_URL, NATS_USER, NATS_PASSWORD, NATS_INBOX_PREFIX and
# DISTRIBUTOR_ARTIFACT_ID lines `bootfleet nats-config --distributor <site>` printed.)
# NET_BIND_SERVICE: udp/67, 69 and 4011. NET_RAW: SO_BINDTODEVICE (answer on one interface only).
# It runs as a non-root user; the binary carries those two file capabilities, so the container
# must be given both (and may be given nothing else). No database, no inbound NATS.
ARG BASE=debian:trixie-slim
FROM ${BASE}

RUN useradd --system --uid 10002 --user-group --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin distributor \
 && install -d -o distributor -g distributor -m 0750 /var/cache/bootfleet-distributor
COPY target/release/bootfleet-distributor /usr/local/bin/bootfleet-distributor
# setcap in this stage: the legacy builder's COPY --from drops the capability attribute. libcap2-bin
# is needed only for this step. ipmitool powers machines through IPMI BMCs; ca-certificates is the
# bundle Redfish BMCs without their own CA are verified against. (Exact Debian revisions are not
# pinned: see builder.Dockerfile.)
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends libcap2-bin ipmitool ca-certificates \
 && setcap cap_net_bind_service,cap_net_raw+ep /usr/local/bin/bootfleet-distributor \
 && apt-get purge -y --auto-remove libcap2-bin \
 && rm -rf /var/lib/apt/lists/*

ENV DISTRIBUTOR_CACHE_DIR=/var/cache/bootfleet-distributor
VOLUME ["/var/cache/bootfleet-distributor"]
USER 10002:10002
# Healthy while its proxyDHCP (udp/67) and TFTP (udp/69) sockets are bound.
HEALTHCHECK --interval=15s --timeout=5s --start-period=10s --retries=3 \
  CMD ["sh", "-c", "grep -q ':0043 00000000:0000' /proc/net/udp && grep -q ':0045 00000000:0000' /proc/net/udp"]
ENTRYPOINT ["bootfleet-distributor"]
CMD ["serve", "--help"]
