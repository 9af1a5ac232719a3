//! `bootfleet.api.v1.Artifacts`: the boot artifacts of `/api/{ipxes,grubs,syslinuxs,isos}`,
//! a build followed until it ends, and a built file downloaded with its digest.

use std::pin::Pin;
use std::time::Duration;

use bootfleet_api::artifacts::{object_name, ArtifactKind};
use bootfleet_api::subjects::{self, Op};
use bootfleet_api::{proto, ApiError, ErrorCode};
use futures_util::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use super::pb::{self, artifacts_server::Artifacts};
use super::relayed::renamed_body;
use super::{checked_id, invalid, list_params, status, Api, Call, Paged};
use crate::auth::Access;

/// How often a followed build is asked for its state (the builders report progress in steps
/// of seconds).
const WATCH_EVERY: Duration = Duration::from_millis(500);
/// A followed build that has not ended by then ends the stream with DEADLINE_EXCEEDED, so a
/// stuck build never holds a stream open for ever.
const WATCH_LIMIT: Duration = Duration::from_secs(3600);

type RowStream = Pin<Box<dyn Stream<Item = Result<proto::Artifact, Status>> + Send>>;
type ChunkStream = Pin<Box<dyn Stream<Item = Result<pb::DownloadChunk, Status>> + Send>>;

fn subject(op: Op) -> String {
    subjects::subject(subjects::ARTIFACTS, op)
}

fn kind(name: &str) -> Result<ArtifactKind, Status> {
    ArtifactKind::parse(name).ok_or_else(|| {
        let names: Vec<&str> = ArtifactKind::ALL.iter().map(|k| k.name()).collect();
        invalid("kind", format!("must be one of {}", names.join(", ")))
    })
}

/// The reference with its kind and id checked.
fn checked_ref(r: proto::ArtifactRef) -> Result<proto::ArtifactRef, Status> {
    Ok(proto::ArtifactRef {
        kind: kind(&r.kind)?.name().to_owned(),
        id: checked_id(&r.id)?,
    })
}

fn ended(row: &proto::Artifact) -> bool {
    matches!(row.status.as_str(), "done" | "failed")
}

impl Api {
    async fn artifact(
        &self,
        call: &Call,
        r: &proto::ArtifactRef,
    ) -> Result<proto::Artifact, Status> {
        self.ask(call, &subject(Op::Get), r).await
    }

    /// Sends the row whenever its status or progress changes, until it ends, the client hangs
    /// up, or [`WATCH_LIMIT`] passes.
    async fn follow(
        self,
        call: Call,
        r: proto::ArtifactRef,
        first: proto::Artifact,
        tx: tokio::sync::mpsc::Sender<Result<proto::Artifact, Status>>,
    ) {
        let started = tokio::time::Instant::now();
        let mut last = (first.status.clone(), first.progress);
        if tx.send(Ok(first.clone())).await.is_err() || ended(&first) {
            return;
        }
        loop {
            if started.elapsed() > WATCH_LIMIT {
                let _ = tx
                    .send(Err(status(ApiError::new(
                        ErrorCode::Timeout,
                        format!(
                            "{} {} did not end within {WATCH_LIMIT:?}; watch it again",
                            r.kind, r.id
                        ),
                    ))))
                    .await;
                return;
            }
            tokio::select! {
                () = tokio::time::sleep(WATCH_EVERY) => {}
                () = tx.closed() => return,
            }
            let row = match self.artifact(&call, &r).await {
                Ok(row) => row,
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            };
            let now = (row.status.clone(), row.progress);
            if now != last || ended(&row) {
                last = now;
                let end = ended(&row);
                if tx.send(Ok(row)).await.is_err() || end {
                    return;
                }
            }
        }
    }
}

#[tonic::async_trait]
impl Artifacts for Api {
    async fn list_artifacts(
        &self,
        req: Request<pb::ListArtifactsRequest>,
    ) -> Result<Response<pb::ArtifactPage>, Status> {
        let (call, r) = self.take(req, Access::Read)?;
        let kind = kind(&r.kind)?;
        let params = list_params(r.list)?;
        let list_request = proto::ListArtifacts {
            kind: kind.name().to_owned(),
            list: Some(params.to_proto()),
        };
        let list: proto::ArtifactList = self.ask(&call, &subject(Op::List), &list_request).await?;
        Ok(Response::new(list.page(&params)))
    }

    async fn get_artifact(
        &self,
        req: Request<proto::ArtifactRef>,
    ) -> Result<Response<proto::Artifact>, Status> {
        let call = self.authorize(&req, Access::Read)?;
        let r = checked_ref(req.into_inner())?;
        Ok(Response::new(self.artifact(&call, &r).await?))
    }

    async fn create_artifact(
        &self,
        req: Request<pb::CreateArtifactRequest>,
    ) -> Result<Response<proto::Artifact>, Status> {
        let (call, r) = self.take(req, Access::Write)?;
        let kind = kind(&r.kind)?;
        // REST calls the inputs the body; here they are a field of the request.
        let inputs_json = crate::routes::artifacts::inputs_json(kind, &r.inputs_json)
            .map_err(|e| status(renamed_body(e, "inputs_json")))?;
        let create = proto::CreateArtifact {
            kind: kind.name().to_owned(),
            id: uuid::Uuid::new_v4().to_string(),
            inputs_json,
        };
        self.answer(&call, &subject(Op::Create), &create).await
    }

    async fn delete_artifact(
        &self,
        req: Request<proto::ArtifactRef>,
    ) -> Result<Response<proto::Artifact>, Status> {
        let call = self.authorize(&req, Access::Write)?;
        let r = checked_ref(req.into_inner())?;
        self.answer(&call, &subject(Op::Delete), &r).await
    }

    type WatchArtifactStream = RowStream;

    async fn watch_artifact(
        &self,
        req: Request<proto::ArtifactRef>,
    ) -> Result<Response<RowStream>, Status> {
        let call = self.authorize(&req, Access::Read)?;
        let r = checked_ref(req.into_inner())?;
        // The first answer is asked before the stream starts, so a wrong id is a plain error.
        let first = self.artifact(&call, &r).await?;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(self.clone().follow(call, r, first, tx));
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    type DownloadArtifactStream = ChunkStream;

    async fn download_artifact(
        &self,
        req: Request<pb::DownloadArtifactRequest>,
    ) -> Result<Response<ChunkStream>, Status> {
        let (call, d) = self.take(req, Access::NodeRead)?;
        let r = checked_ref(proto::ArtifactRef {
            kind: d.kind,
            id: d.id,
        })?;
        let row = self.artifact(&call, &r).await?;
        // A node token bound to a site downloads what is marked for its site or every site.
        crate::auth::may_read(
            call.claims.as_ref(),
            &bootfleet_api::artifacts::sites_of(&row.inputs_json),
            &|| format!("{} {}", r.kind, row.id),
        )
        .map_err(status)?;
        if row.status != "done" {
            return Err(status(ApiError::new(
                ErrorCode::Conflict,
                format!("{} {} is {}, not built yet", r.kind, row.id, row.status),
            )));
        }
        let Some(entry) = row.files.iter().find(|f| f.name == d.file).cloned() else {
            return Err(status(ApiError::not_found(format!(
                "file {:?} of {} {}",
                d.file, r.kind, row.id
            ))));
        };
        let chunks = self
            .state
            .artifact_store()
            .await
            .map_err(status)?
            .chunks(&object_name(&row.key, &entry.name), 0..entry.size)
            .await
            .map_err(|e| status(ApiError::from(e)))?;
        let head = pb::DownloadChunk {
            file: Some(entry),
            data: Vec::new(),
        };
        let data = chunks.map(|chunk| {
            chunk
                .map(|bytes| pb::DownloadChunk {
                    file: None,
                    data: bytes.to_vec(),
                })
                .map_err(|e| status(ApiError::from(e)))
        });
        Ok(Response::new(Box::pin(
            futures_util::stream::once(async { Ok(head) }).chain(data),
        )))
    }
}
