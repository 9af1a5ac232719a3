//! `bootfleet.api.v1.SshKeys`: the SSH public keys of `/api/sshkeys` and the key-pair generator
//! of `/api/sshkey`.

use bootfleet_api::subjects::{self, Op};
use bootfleet_api::{proto, validate};
use tonic::{Request, Response, Status};

use super::pb::{self, ssh_keys_server::SshKeys};
use super::{checked_id, deadline_of, id_request, status, Api};
use crate::auth::Access;

/// RSA-4096 can take seconds; as REST, one attempt with a long wait.
const KEYGEN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

fn subject(op: Op) -> String {
    subjects::subject(subjects::SSHKEYS, op)
}

fn check_site(artifact_id: &str) -> Result<(), Status> {
    validate::artifact_id("artifactId", artifact_id)
        .map(drop)
        .map_err(status)
}

relayed_service! {
    impl SshKeys {
        list_ssh_keys: page(proto::SshKeyList) => subject(Op::List);
        delete_ssh_key: id(proto::SshKey, Write) => subject(Op::Delete);
    }

    async fn get_ssh_key(
        &self,
        req: Request<proto::IdRequest>,
    ) -> Result<Response<proto::SshKey>, Status> {
        let call = self.authorize(&req, Access::NodeRead)?;
        let id = id_request(req.into_inner())?;
        let row: proto::SshKey = self.ask(&call, &subject(Op::Get), &id).await?;
        // A node token bound to a site reads that site's keys only (as on REST).
        crate::auth::may_read(
            call.claims.as_ref(),
            std::slice::from_ref(&row.artifact_id),
            &|| format!("key {}", row.id),
        )
        .map_err(status)?;
        Ok(Response::new(row))
    }

    async fn create_ssh_key(
        &self,
        req: Request<pb::SshKeyInput>,
    ) -> Result<Response<proto::SshKey>, Status> {
        let (call, r) = self.take(req, Access::Write)?;
        check_site(&r.artifact_id)?;
        let create = proto::CreateSshKey {
            id: uuid::Uuid::new_v4().to_string(),
            text: r.text,
            artifact_id: r.artifact_id,
        };
        self.answer(&call, &subject(Op::Create), &create).await
    }

    async fn update_ssh_key(
        &self,
        req: Request<pb::UpdateSshKeyRequest>,
    ) -> Result<Response<proto::SshKey>, Status> {
        let (call, r) = self.take(req, Access::Write)?;
        let id = checked_id(&r.id)?;
        check_site(&r.artifact_id)?;
        let update = proto::UpdateSshKey {
            id,
            text: r.text,
            artifact_id: r.artifact_id,
        };
        self.answer(&call, &subject(Op::Update), &update).await
    }

    async fn generate_ssh_key(
        &self,
        req: Request<proto::GenerateSshKey>,
    ) -> Result<Response<proto::GeneratedSshKey>, Status> {
        let call = self.authorize(&req, Access::Read)?;
        deadline_of(&req).allow(KEYGEN_TIMEOUT);
        let generate = req.into_inner();
        let pair = self
            .bus()
            .with_timeout(KEYGEN_TIMEOUT, 1)
            .request(&call.trace, &subject(Op::Generate), &generate)
            .await
            .map_err(status)?;
        Ok(Response::new(pair))
    }
}
