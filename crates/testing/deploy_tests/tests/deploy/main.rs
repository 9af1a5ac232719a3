//! The ways to run Bootfleet, run for real where this machine can:
//!
//! - `images`: every image builds on the Docker engine from the locally made base, runs as its
//!   non-root user with a health check, and a builder image holds its own kind's tools only;
//! - `compose`: deploy/compose.yaml comes up healthy, serves scripts and builds an iPXE binary
//!   and an ISO through the per-kind builder containers, and `down -v` leaves nothing behind;
//! - `cluster`: deploy/compose.cluster.yaml (three NATS nodes, two replicas of everything) loses
//!   its build queue's leader, has a node cut off and a gateway and a service replica killed
//!   under load: nothing acknowledged is lost or stored twice;
//! - `pxe`: the distributor image PXE-boots a QEMU guest through a veth in its container's
//!   network namespace (what `--network host` does on a site), connected to NATS and online;
//! - `kubernetes`: the Helm chart lints and renders manifests valid against Kubernetes' schemas,
//!   and skaffold.yaml matches the repository (no cluster can run here: static checks only);
//! - `systemd`: the units pass `systemd-analyze verify`; `dockerfiles`: hadolint.

mod cluster;
mod compose;
mod dockerfiles;
mod images;
mod kubernetes;
mod pxe;
mod support;
mod systemd;
