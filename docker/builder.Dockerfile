# A build worker for one kind of artifact, carrying exactly the Debian packages that kind runs:
#   docker build -f docker/builder.Dockerfile --build-arg KIND=ipxes -t bootfleet-builder-ipxes .
# KIND: ipxes (Debian's iPXE binaries), grubs (grub-mkimage and GRUB's EFI modules, mtools, zip),
# syslinuxs (SYSLINUX/ISOLINUX files), isos (xorriso, mtools, unzip), or builders (all of them:
# one worker that takes every kind, as `bootfleet up` runs it).
# The container runs `bootfleet service $KIND`; it needs NATS_URL and DATABASE_URL. The
# `artifacts` registry runs in the all-kinds image too: it checks the tools' versions of a kind
# (part of a build's content address) before it queues a job.
ARG BASE=debian:trixie-slim
FROM ${BASE}
ARG KIND=builders

# Tools first, binary last: a new binary reuses the package layer. Versions come from the base's
# suite (trixie): pinning exact Debian revisions would only break the build at the next point release.
# hadolint ignore=DL3008,SC2086
RUN case "$KIND" in \
      ipxes) tools="ipxe" ;; \
      grubs) tools="grub-common grub-efi-amd64-bin grub-efi-ia32-bin mtools zip" ;; \
      syslinuxs) tools="syslinux-common isolinux" ;; \
      isos) tools="xorriso mtools unzip" ;; \
      builders) tools="ipxe grub-common grub-efi-amd64-bin grub-efi-ia32-bin mtools zip syslinux-common isolinux xorriso unzip" ;; \
      *) echo "KIND must be ipxes, grubs, syslinuxs, isos or builders, not '$KIND'" >&2; exit 1 ;; \
    esac \
 && apt-get update \
 && apt-get install -y --no-install-recommends $tools \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /var/lib/bootfleet --create-home \
      --shell /usr/sbin/nologin bootfleet
COPY target/release/bootfleet /usr/local/bin/bootfleet

ENV BOOTFLEET_DATA_DIR=/var/lib/bootfleet \
    BOOTFLEET_BUILDER_KIND=${KIND}
USER 10001:10001
WORKDIR /var/lib/bootfleet
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 CMD ["bootfleet", "healthcheck"]
# Without arguments the image runs the builder of its kind (a shell reads the kind it was built
# for); with arguments it runs `bootfleet <arguments>` (`service artifacts`, `healthcheck`).
ENTRYPOINT ["/bin/sh", "-c", "[ $# -gt 0 ] || set -- service \"$BOOTFLEET_BUILDER_KIND\"; exec bootfleet \"$@\"", "bootfleet"]
