# Every Bootfleet service and the gateway: one `bootfleet` binary, the role is the command.
#   cargo build --release --locked -p bootfleet
#   docker build -f docker/bootfleet.Dockerfile -t bootfleet .
#   docker run bootfleet service mainscripts      (kickstarts, sshkeys, distributors, localnodes, machines, actions, artifacts)
#   docker run -p 8080:8080 -p 8081:8081 bootfleet gateway     (REST on 8080, gRPC on 8081)
# The builders have their own images (docker/builder.Dockerfile): this one carries no build tools.
# The binary comes from `target/release` (built on Debian 12 or 13: glibc 2.36 runs on trixie's
# 2.41, not the other way round). BASE defaults to the public image; scripts/docker-base makes a
# local one under the same tag where no registry is reachable.
ARG BASE=debian:trixie-slim
FROM ${BASE}

# A fixed uid/gid, so volumes and Kubernetes' runAsUser agree with the image.
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/bootfleet --create-home \
      --shell /usr/sbin/nologin bootfleet
COPY target/release/bootfleet /usr/local/bin/bootfleet

ENV BOOTFLEET_DATA_DIR=/var/lib/bootfleet \
    BOOTFLEET_LISTEN=0.0.0.0:8080 \
    BOOTFLEET_GRPC_LISTEN=0.0.0.0:8081
USER 10001:10001
WORKDIR /var/lib/bootfleet
EXPOSE 8080 8081
# `bootfleet healthcheck` finds the role of the bootfleet process beside it: the gateway answers
# GET /healthz, a service answers its ping over NATS.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 CMD ["bootfleet", "healthcheck"]
ENTRYPOINT ["bootfleet"]
CMD ["--help"]
