# PostgreSQL 17 for Bootfleet, from Debian's packages (no registry needed):
#   docker build -f docker/postgres.Dockerfile -t bootfleet-postgres .
#   docker run -e POSTGRES_PASSWORD=... -v pg-data:/var/lib/postgresql/data bootfleet-postgres
# On an empty data volume it creates a cluster whose superuser and database are POSTGRES_USER
# (default bootfleet) with POSTGRES_PASSWORD (or the file POSTGRES_PASSWORD_FILE); logins over the
# network use scram-sha-256.
ARG BASE=debian:trixie-slim
FROM ${BASE}

# No cluster at install time: the entrypoint makes one on the data volume.
# (Exact Debian revisions are not pinned: see builder.Dockerfile.)
# The postgres user first, with a fixed system uid (Kubernetes' runAsUser, volume ownership); the
# package takes the existing user.
# hadolint ignore=DL3008
RUN useradd --system --uid 991 --user-group --home-dir /var/lib/postgresql --create-home \
      --shell /bin/sh postgres \
 && mkdir -p /etc/postgresql-common/createcluster.d \
 && echo 'create_main_cluster = false' > /etc/postgresql-common/createcluster.d/bootfleet.conf \
 && apt-get update \
 && apt-get install -y --no-install-recommends postgresql-17 \
 && rm -rf /var/lib/apt/lists/* \
 && install -d -o postgres -g postgres -m 0700 /var/lib/postgresql/data \
 && install -d -o postgres -g postgres -m 2775 /var/run/postgresql
COPY docker/postgres/entrypoint.sh /usr/local/bin/bootfleet-postgres

ENV PATH=/usr/lib/postgresql/17/bin:$PATH \
    PGDATA=/var/lib/postgresql/data
USER 991:991
VOLUME ["/var/lib/postgresql/data"]
EXPOSE 5432
HEALTHCHECK --interval=5s --timeout=5s --start-period=20s --retries=5 \
  CMD ["sh", "-c", "pg_isready -q -h 127.0.0.1 -U \"${POSTGRES_USER:-bootfleet}\" -d \"${POSTGRES_DB:-bootfleet}\""]
ENTRYPOINT ["bootfleet-postgres"]
