//! The builders: consume the JetStream work queue one job at a time, build in a temporary
//! directory, store the files, mark the row, then ack.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream, AckKind};
use bootfleet_api::artifacts::{ArtifactKind, GrubInput, IpxeInput, IsoInput, SyslinuxInput};
use bootfleet_api::subjects;
use bootfleet_api::{proto, ApiError, ErrorCode};
use bootfleet_boot_media::{grub, ipxe, iso, syslinux, BuildError, Built, Cancel, Toolbox};
use bootfleet_bus::{Bus, RunningService, ServiceBuilder};
use bootfleet_service_kit::{Context, Routes, Service};
use bootfleet_store::Database;
use futures_util::StreamExt;
use prost::Message;
use tokio::sync::watch;
use tracing::Instrument;

use crate::inputs::{self, IsoRefs, Request};
use crate::objects::Objects;
use crate::{kind_of, Record, Registry, StartError, StoredFile, DONE, FAILED, WORKING};

/// The default ack wait of build jobs.
pub const DEFAULT_ACK_WAIT_SECS: u64 = 6;

/// How the builders use the queue.
#[derive(Clone, Copy, Debug)]
pub struct WorkerConfig {
    /// A job not acked (nor marked in progress) within this is handed to another builder.
    pub ack_wait: Duration,
    /// Deliveries before a job that keeps failing for infrastructure reasons is marked failed.
    pub max_deliver: i64,
}

impl WorkerConfig {
    /// `BOOTFLEET_BUILD_ACK_WAIT_SECS` (default 6: a builder marks its job in progress every
    /// third of it, so a builder that died gives its job to another within seconds).
    pub fn from_env() -> WorkerConfig {
        let secs = std::env::var("BOOTFLEET_BUILD_ACK_WAIT_SECS")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|s| *s >= 1)
            .unwrap_or(DEFAULT_ACK_WAIT_SECS);
        WorkerConfig {
            ack_wait: Duration::from_secs(secs),
            max_deliver: 5,
        }
    }
}

/// The work-queue stream: each job is delivered to one builder and removed once acked. It has
/// the bus's JetStream replicas (`BOOTFLEET_JETSTREAM_REPLICAS`); one made with fewer is raised.
pub async fn ensure_stream(bus: &Bus) -> Result<stream::Stream, StartError> {
    let js = jetstream::new(bus.client().clone());
    let config = stream::Config {
        name: subjects::BUILD_STREAM.to_owned(),
        subjects: vec![subjects::BUILD_SUBJECTS.to_owned()],
        retention: stream::RetentionPolicy::WorkQueue,
        storage: stream::StorageType::File,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    };
    bootfleet_bus::streams::ensure_stream(&js, config, bus.jetstream_replicas())
        .await
        .map_err(|e| StartError::Setup(format!("cannot create the build queue: {e}")))
}

/// What an ISO is made of, checked: each part exists, is `done`, and is the right thing.
pub(crate) async fn resolve_iso_parts(
    registry: &Registry,
    label: &str,
    refs: &IsoRefs,
) -> Result<Vec<Record>, ApiError> {
    type Check = fn(&Record, &str) -> Result<(), String>;
    fn ipxe(r: &Record, platform: &str, extension: &str) -> Result<(), String> {
        let i: IpxeInput = serde_json::from_str(&r.inputs).map_err(|e| e.to_string())?;
        if i.platform == platform && i.driver == "ipxe" && i.extension == extension {
            Ok(())
        } else {
            Err(format!("must be a {platform}/ipxe.{extension} ipxe"))
        }
    }
    fn grub(r: &Record, label: &str, arch: &str, fragment: &str) -> Result<(), String> {
        let g: GrubInput = serde_json::from_str(&r.inputs).map_err(|e| e.to_string())?;
        if g.architecture != arch || g.fragment != fragment {
            return Err(format!(
                "must be a grub of architecture {arch}, fragment {fragment}"
            ));
        }
        if g.label != label {
            return Err(format!(
                "was built for label {:?}, the iso's label is {label:?}",
                g.label
            ));
        }
        Ok(())
    }
    fn syslinux(r: &Record, fragment: &str) -> Result<(), String> {
        let s: SyslinuxInput = serde_json::from_str(&r.inputs).map_err(|e| e.to_string())?;
        if s.fragment == fragment {
            Ok(())
        } else {
            Err(format!("must be the syslinux fragment {fragment}"))
        }
    }
    let parts: [(&'static str, &str, ArtifactKind, Check); 8] = [
        (
            "ipxeUefiUrl",
            &refs.ipxe_uefi,
            ArtifactKind::Ipxes,
            |r, _| {
                ipxe(r, "bin-x86_64-efi", "efi")?;
                // On the ISO the script rides on ipxe.efi's command line: it must survive that.
                let i: IpxeInput = serde_json::from_str(&r.inputs).map_err(|e| e.to_string())?;
                iso::validate_efi_script(&i.script).map_err(|e| e.to_string())
            },
        ),
        (
            "ipxeBiosUrl",
            &refs.ipxe_bios,
            ArtifactKind::Ipxes,
            |r, _| ipxe(r, "bin", "lkrn"),
        ),
        ("grubImgUrl", &refs.grub_img, ArtifactKind::Grubs, |r, l| {
            grub(r, l, "x64", "img")
        }),
        (
            "grubEfiX64Url",
            &refs.grub_efi_x64,
            ArtifactKind::Grubs,
            |r, l| grub(r, l, "x64", "efi"),
        ),
        (
            "grubEfiX86Url",
            &refs.grub_efi_x86,
            ArtifactKind::Grubs,
            |r, l| grub(r, l, "x86", "efi"),
        ),
        (
            "ldLinuxUrl",
            &refs.ldlinux,
            ArtifactKind::Syslinuxs,
            |r, _| syslinux(r, "ldlinux.c32"),
        ),
        (
            "isolinuxBinUrl",
            &refs.isolinux_bin,
            ArtifactKind::Syslinuxs,
            |r, _| syslinux(r, "isolinux.bin"),
        ),
        (
            "isohdpfxBinUrl",
            &refs.isohdpfx_bin,
            ArtifactKind::Syslinuxs,
            |r, _| syslinux(r, "isohdpfx.bin"),
        ),
    ];
    let mut records = Vec::with_capacity(parts.len());
    for (field, id, kind, check) in parts {
        let record = registry
            .find(id)
            .await?
            .filter(|r| r.kind == kind.name())
            .ok_or_else(|| {
                ApiError::invalid(
                    field,
                    format!("names no {} of this system", kind.singular()),
                )
            })?;
        check(&record, label).map_err(|m| ApiError::invalid(field, m))?;
        if record.status != DONE {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                format!(
                    "{field} names {} {id}, which is {}, not done",
                    kind.singular(),
                    record.status
                ),
            ));
        }
        records.push(record);
    }
    Ok(records)
}

#[derive(Debug)]
enum JobError {
    /// The build itself failed: the row ends `failed` with this message.
    Failed(String),
    /// Something around the build failed (object store, database): try again later.
    Retry(String),
    /// The builder is stopping: leave the job to another one.
    Cancelled,
}

impl From<BuildError> for JobError {
    fn from(e: BuildError) -> Self {
        match e {
            BuildError::Cancelled => JobError::Cancelled,
            BuildError::Io(e) => JobError::Retry(format!("i/o error during the build: {e}")),
            other => JobError::Failed(other.to_string()),
        }
    }
}

#[derive(Clone, Debug)]
struct Builder {
    registry: Registry,
    objects: Objects,
    toolbox: Arc<Toolbox>,
    config: WorkerConfig,
}

/// Build attempts by kind and outcome (`done`, `failed`, `retry`: another attempt follows,
/// `cancelled`: the builder stopped), with their durations.
static BUILDS: std::sync::LazyLock<bootfleet_telemetry::LabeledHistogram<2>> =
    std::sync::LazyLock::new(|| {
        bootfleet_telemetry::histogram(
            "build_duration_seconds",
            "Build attempts by artifact kind and outcome, with their durations",
            ["kind", "outcome"],
            bootfleet_telemetry::Buckets::Build,
        )
    });

/// A builder of one kind of artifact: the service named after its kind (`ipxes`, `grubs`,
/// `syslinuxs`, `isos`; it answers `ping`) and a consumer of that kind's jobs only, so each kind
/// is deployed and scaled alone with only its tools. Builders are worker roles of `artifacts`
/// and share its tables. `bootfleet service builders` runs all four in one process.
pub fn builder_service(kind: ArtifactKind, config: WorkerConfig, toolbox: Arc<Toolbox>) -> Service {
    Service::new(kind.name(), &crate::SCHEMA, move |service, ctx| {
        routes(service, ctx, kind, config, toolbox.clone())
    })
}

/// A builder for `kind`, configured from the environment (see [`WorkerConfig::from_env`] and
/// [`Toolbox::from_env`]).
pub fn builder_from_env(kind: ArtifactKind) -> Service {
    builder_service(
        kind,
        WorkerConfig::from_env(),
        Arc::new(Toolbox::from_env()),
    )
}

/// One builder per kind.
pub fn every_kind(config: WorkerConfig, toolbox: Toolbox) -> Vec<Service> {
    let toolbox = Arc::new(toolbox);
    ArtifactKind::ALL
        .into_iter()
        .map(|kind| builder_service(kind, config, toolbox.clone()))
        .collect()
}

/// The durable consumer of one kind's jobs. Filters of consumers on a work-queue stream must
/// not overlap, so there is one per kind and a builder of several kinds pulls from each.
fn consumer_name(kind: ArtifactKind) -> String {
    format!("builders-{}", kind.name())
}

/// Before builders were per kind, one unfiltered consumer took every job; while it exists no
/// filtered consumer may be made. Its unacked jobs stay in the stream for the new consumers.
const LEGACY_CONSUMER: &str = "builders";

/// Hands a job back to the queue for another try in 2 s (best effort: unacked, it comes back
/// after the ack wait anyway).
async fn retry_later(msg: &jetstream::Message) {
    let _ = msg
        .ack_with(AckKind::Nak(Some(Duration::from_secs(2))))
        .await;
}

async fn routes(
    service: ServiceBuilder,
    ctx: Context,
    kind: ArtifactKind,
    config: WorkerConfig,
    toolbox: Arc<Toolbox>,
) -> Routes {
    let stream = ensure_stream(&ctx.bus).await?;
    if stream.consumer_info(LEGACY_CONSUMER).await.is_ok() {
        match stream.delete_consumer(LEGACY_CONSUMER).await {
            Ok(_) => tracing::info!(
                consumer = LEGACY_CONSUMER,
                "removed the all-kinds build consumer; builders now take jobs per kind"
            ),
            // Another builder starting at the same time removed it first.
            Err(e) => tracing::debug!(error = %e, "legacy build consumer not removed"),
        }
    }
    let consumer = job_consumer(&stream, kind, config).await?;
    std::sync::LazyLock::force(&BUILDS);
    let builder = Builder {
        registry: Registry::new(ctx.db.clone()),
        objects: Objects::open(&ctx.bus).await?,
        toolbox,
        config,
    };
    Ok(service.background(move |stop| builder.consume(consumer, stop)))
}

/// The durable consumer of `kind`'s jobs, with this configuration's ack wait and deliveries.
/// A consumer made earlier with other values (an older default, another setting) is updated:
/// `get_or_create` alone would keep the first builder's values forever.
pub async fn job_consumer(
    stream: &stream::Stream,
    kind: ArtifactKind,
    config: WorkerConfig,
) -> Result<consumer::PullConsumer, StartError> {
    let name = consumer_name(kind);
    let wanted = consumer::pull::Config {
        durable_name: Some(name.clone()),
        filter_subject: subjects::build_job(kind.name()),
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: config.ack_wait,
        max_deliver: config.max_deliver,
        ..Default::default()
    };
    let failed = |e: &dyn std::fmt::Display| {
        StartError::Setup(format!("cannot create the consumer {name}: {e}"))
    };
    let mut consumer: consumer::PullConsumer = stream
        .get_or_create_consumer(&name, wanted.clone())
        .await
        .map_err(|e| failed(&e))?;
    let current = &consumer.cached_info().config;
    if current.ack_wait != config.ack_wait || current.max_deliver != config.max_deliver {
        tracing::info!(
            consumer = %name,
            ack_wait_secs = config.ack_wait.as_secs(),
            max_deliver = config.max_deliver,
            "updating the build consumer to this builder's settings"
        );
        stream
            .update_consumer(wanted)
            .await
            .map_err(|e| failed(&e))?;
        consumer = stream.get_consumer(&name).await.map_err(|e| failed(&e))?;
    }
    Ok(consumer)
}

/// Migrates and starts a builder of every kind with this configuration (tests, benchmarks).
pub async fn start_with(
    bus: Bus,
    db: Database,
    config: WorkerConfig,
    toolbox: Toolbox,
) -> Result<Vec<RunningService>, StartError> {
    let builders = every_kind(config, toolbox);
    let builders: Vec<&Service> = builders.iter().collect();
    bootfleet_service_kit::start(&Context { bus, db }, &builders).await
}

impl Builder {
    async fn consume(self, consumer: consumer::PullConsumer, mut stop: watch::Receiver<bool>) {
        loop {
            if *stop.borrow() {
                break;
            }
            // One job at a time: a prefetched job would sit unacked while another one builds.
            let batch = tokio::select! {
                batch = consumer.fetch().max_messages(1).expires(Duration::from_secs(5)).messages() => batch,
                _ = stop.changed() => break,
            };
            let mut batch = match batch {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot fetch from the build queue; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            // The pull waits up to its expiry for a job; a stop must not wait with it (a job
            // that arrives as the builder stops stays unacked and goes to another builder).
            loop {
                let msg = tokio::select! {
                    msg = batch.next() => msg,
                    _ = stop.changed() => return,
                };
                let Some(msg) = msg else { break };
                match msg {
                    Ok(msg) => {
                        if !self.handle(msg, &mut stop).await {
                            return;
                        }
                    }
                    // A status instead of a job (503 while the stream elects a leader on a
                    // NATS cluster): wait a moment rather than ask again at once.
                    Err(e) => {
                        tracing::warn!(error = %e, "bad message from the build queue; asking again in a moment");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        break;
                    }
                }
            }
        }
    }

    /// Handles one job; false when the builder is stopping.
    async fn handle(&self, msg: jetstream::Message, stop: &mut watch::Receiver<bool>) -> bool {
        let job = match proto::BuildJob::decode(msg.payload.clone()) {
            Ok(job) => job,
            Err(e) => {
                tracing::error!(error = %e, "undecodable build job; dropped");
                let _ = msg.ack_with(AckKind::Term).await;
                return true;
            }
        };
        let parent = msg
            .headers
            .as_ref()
            .and_then(|h| h.get(bootfleet_bus::TRACEPARENT_HEADER))
            .and_then(|v| bootfleet_bus::TraceParent::parse(v.as_str()));
        let span = tracing::info_span!(
            "build",
            otel.name = %format_args!("build {}", job.kind),
            otel.kind = "consumer",
            artifact = %job.id,
            kind = %job.kind,
        );
        bootfleet_bus::TraceParent::for_span(parent.as_ref(), &span);
        self.handle_job(job, msg, stop).instrument(span).await
    }

    async fn handle_job(
        &self,
        job: proto::BuildJob,
        msg: jetstream::Message,
        stop: &mut watch::Receiver<bool>,
    ) -> bool {
        let delivered = msg.info().map(|i| i.delivered).unwrap_or(1);
        let record = match self.registry.find(&job.id).await {
            Ok(Some(r)) => r,
            Ok(None) => {
                tracing::info!(artifact = %job.id, "job for a deleted artifact; dropped");
                let _ = msg.ack().await;
                return true;
            }
            Err(e) => {
                tracing::warn!(artifact = %job.id, error = %e.message, "cannot read the row; retrying later");
                retry_later(&msg).await;
                return true;
            }
        };
        if record.status == DONE || record.status == FAILED {
            // A redelivery after the row was finished (the ack was lost): nothing to do.
            let _ = msg.ack().await;
            return true;
        }
        tracing::info!(artifact = %job.id, kind = %job.kind, delivered, "build started");
        if let Err(e) = self
            .registry
            .update_state(&job.id, WORKING, 0, "", None)
            .await
        {
            tracing::warn!(artifact = %job.id, error = %e.message, "cannot mark the row working");
        }
        // Tell JetStream we are alive so a long build is not handed to another builder.
        let keepalive = {
            let every = self.config.ack_wait / 3;
            let reply = msg.reply.clone();
            let client = msg.context.client().clone();
            tokio::spawn(async move {
                let Some(reply) = reply else { return };
                loop {
                    tokio::time::sleep(every).await;
                    let _ = client.publish(reply.clone(), "+WPI".into()).await;
                }
            })
        };
        let cancel = Cancel::default();
        let started = std::time::Instant::now();
        let outcome = {
            let build = self.build(&record, &cancel);
            tokio::pin!(build);
            tokio::select! {
                outcome = &mut build => outcome,
                _ = stop.changed() => {
                    cancel.cancel();
                    build.await
                }
            }
        };
        keepalive.abort();
        let label = match &outcome {
            Ok(_) => "done",
            Err(JobError::Failed(_)) => "failed",
            Err(JobError::Retry(_)) => "retry",
            Err(JobError::Cancelled) => "cancelled",
        };
        let kind = kind_of(&record.kind).map_or("unknown", |k| k.name());
        BUILDS.observe([kind, label], started.elapsed());
        match outcome {
            Ok((files, embedded)) => {
                match self
                    .registry
                    .update_state(&job.id, DONE, 100, "", Some((&files, embedded)))
                    .await
                {
                    Ok(true) => {
                        tracing::info!(artifact = %job.id, kind = %job.kind, "build done")
                    }
                    Ok(false) => {
                        // Deleted while building: keep no orphaned bytes.
                        if self.registry.count_by_key(&record.content_key).await.ok() == Some(0) {
                            self.objects.delete_all(&record.content_key, &files).await;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(artifact = %job.id, error = %e.message, "cannot mark the row done; retrying");
                        retry_later(&msg).await;
                        return true;
                    }
                }
                if let Err(e) = msg.double_ack().await {
                    tracing::warn!(artifact = %job.id, error = %e, "ack lost; a redelivery will find the row done");
                }
                true
            }
            Err(JobError::Failed(message)) => {
                tracing::info!(artifact = %job.id, error = %message, "build failed");
                let _ = self
                    .registry
                    .update_state(&job.id, FAILED, 0, &message, None)
                    .await;
                let _ = msg.ack().await;
                true
            }
            Err(JobError::Retry(message)) => {
                if delivered >= self.config.max_deliver {
                    let message = format!("gave up after {delivered} attempts: {message}");
                    let _ = self
                        .registry
                        .update_state(&job.id, FAILED, 0, &message, None)
                        .await;
                    let _ = msg.ack().await;
                } else {
                    tracing::warn!(artifact = %job.id, error = %message, "build attempt failed; retrying");
                    retry_later(&msg).await;
                }
                true
            }
            Err(JobError::Cancelled) => {
                tracing::info!(artifact = %job.id, "builder stopping; the job goes back to the queue");
                let _ = msg.ack_with(AckKind::Nak(None)).await;
                false
            }
        }
    }

    async fn build(
        &self,
        record: &Record,
        cancel: &Cancel,
    ) -> Result<(Vec<StoredFile>, Option<bool>), JobError> {
        let kind = kind_of(&record.kind).map_err(|e| JobError::Failed(e.message))?;
        let request =
            inputs::parse(kind, &record.inputs).map_err(|e| JobError::Failed(e.message))?;
        let dir = tempfile::Builder::new()
            .prefix("bootfleet-build-")
            .tempdir()
            .map_err(|e| JobError::Retry(format!("cannot make a build directory: {e}")))?;
        let out = dir.path().join("out");
        std::fs::create_dir(&out)
            .map_err(|e| JobError::Retry(format!("cannot make a build directory: {e}")))?;
        // Progress from the recipe's steps, 5–90; storing is 90–100.
        let (progress_tx, mut progress_rx) = watch::channel(0u8);
        let progress_task = {
            let registry = self.registry.clone();
            let id = record.id.clone();
            tokio::spawn(async move {
                while progress_rx.changed().await.is_ok() {
                    let p = *progress_rx.borrow_and_update();
                    let _ = registry.update_progress(&id, i32::from(p)).await;
                }
            })
        };
        let iso_inputs = match &request {
            Request::Iso(input, refs) => Some(self.fetch_iso_parts(input, refs, dir.path()).await?),
            _ => None,
        };
        let toolbox = self.toolbox.clone();
        let cancel_for_build = cancel.clone();
        let out_dir = out.clone();
        let built: Result<Built, BuildError> = tokio::task::spawn_blocking(move || {
            let report = move |p: u8, step: &str| {
                tracing::debug!(progress = p, step, "build step");
                let scaled = 5 + u16::from(p.min(100)) * 85 / 100;
                let _ = progress_tx.send(u8::try_from(scaled).unwrap_or(90));
            };
            let c = &cancel_for_build;
            match (request, iso_inputs) {
                (Request::Ipxe(input, target), _) => {
                    ipxe::build(&toolbox, &target, &input.script, &out_dir, &report, c)
                }
                (Request::Grub(_, spec), _) => grub::build(&toolbox, &spec, &out_dir, &report, c),
                (Request::Syslinux(_, fragment), _) => {
                    syslinux::build(&toolbox, fragment, &out_dir, &report, c)
                }
                (Request::Iso(..), Some(inputs)) => {
                    iso::build(&toolbox, &inputs, &out_dir, &report, c)
                }
                (Request::Iso(..), None) => Err(BuildError::Invalid {
                    field: "body",
                    message: "iso parts missing".into(),
                }),
            }
        })
        .await
        .map_err(|e| JobError::Failed(format!("the build panicked: {e}")))?;
        let built = built?;
        let _ = self.registry.update_progress(&record.id, 90).await;
        let mut files = Vec::with_capacity(built.files.len());
        for f in &built.files {
            files.push(
                self.objects
                    .put_file(&record.content_key, &f.name, &f.path)
                    .await
                    .map_err(JobError::Retry)?,
            );
        }
        progress_task.abort();
        Ok((files, built.embedded))
    }

    /// Copies an ISO's parts out of the object store into the build directory.
    async fn fetch_iso_parts(
        &self,
        input: &IsoInput,
        refs: &IsoRefs,
        dir: &Path,
    ) -> Result<iso::IsoInputs, JobError> {
        let parts = resolve_iso_parts(&self.registry, &input.label, refs)
            .await
            .map_err(|e| JobError::Failed(e.message))?;
        let parts_dir = dir.join("parts");
        std::fs::create_dir(&parts_dir).map_err(|e| JobError::Retry(e.to_string()))?;
        let mut paths: Vec<PathBuf> = Vec::with_capacity(parts.len());
        for (i, part) in parts.iter().enumerate() {
            let main =
                part.files().into_iter().next().ok_or_else(|| {
                    JobError::Failed(format!("artifact {} has no files", part.id))
                })?;
            let bytes = self
                .objects
                .read(&part.content_key, &main.name)
                .await
                .map_err(JobError::Retry)?;
            let path = parts_dir.join(format!("{i}-{}", main.name));
            std::fs::write(&path, bytes).map_err(|e| JobError::Retry(e.to_string()))?;
            paths.push(path);
        }
        let script = |r: &Record| -> Result<String, JobError> {
            serde_json::from_str::<IpxeInput>(&r.inputs)
                .map(|i| i.script)
                .map_err(|e| JobError::Failed(format!("artifact {}: {e}", r.id)))
        };
        let mut paths = paths.into_iter();
        let mut next = || paths.next().unwrap_or_default();
        Ok(iso::IsoInputs {
            label: input.label.clone(),
            ipxe_efi: next(),
            ipxe_efi_script: script(&parts[0])?,
            ipxe_lkrn: next(),
            ipxe_lkrn_script: script(&parts[1])?,
            grub_img: next(),
            grub_efi_x64_zip: next(),
            grub_efi_x86_zip: next(),
            ldlinux: next(),
            isolinux_bin: next(),
            isohdpfx_bin: next(),
        })
    }
}
