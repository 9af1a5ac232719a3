# The site agent, as small as it can be: one static-ish Rust binary on distroless (glibc).
#   docker build -f docker/distributor.Dockerfile -t bootfleet-distributor .
#   docker run --net=host --cap-drop=ALL --cap-add=NET_BIND_SERVICE --cap-add=NET_RAW \
#     -e NATS_URL=nats://nats.example:4222 -e DISTRIBUTOR_ARTIFACT_ID=site-1 \
#     -v /var/cache/bootfleet-distributor:/cache bootfleet-distributor \   (owned by uid 65532)
#     serve --interface eth0 --server-ip 192.0.2.10 --cache-dir /cache \
#           --bios-file undionly.kpxe --uefi-x64-file ipxe.efi --ipxe-script-url http://...
# NET_BIND_SERVICE: udp/67, 69 and 4011. NET_RAW: SO_BINDTODEVICE (answer on one interface only).
# No other capability, no root (the image's `nonroot` user), no database: it speaks NATS outward and DHCP/TFTP on its LAN.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# File capabilities let the image's non-root user bind the low ports and the interface;
# `--cap-add` keeps the two in the container's bounding set. (libcap2-bin is a build tool here;
# pinning its exact Debian revision would only break the build at the next point release.)
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends libcap2-bin \
 && rm -rf /var/lib/apt/lists/* \
 && cargo build --release --locked -p bootfleet-site-agent \
 && strip target/release/bootfleet-distributor \
 && setcap cap_net_bind_service,cap_net_raw+ep target/release/bootfleet-distributor

FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
COPY --from=build /src/target/release/bootfleet-distributor /usr/local/bin/bootfleet-distributor
VOLUME ["/cache"]
ENV DISTRIBUTOR_CACHE_DIR=/cache
ENTRYPOINT ["/usr/local/bin/bootfleet-distributor"]
CMD ["serve", "--help"]
