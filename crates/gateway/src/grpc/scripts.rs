//! `bootfleet.api.v1.Scripts`: the five text registries, as `/api/<kind>` does them.

use bootfleet_api::subjects::{Op, ScriptKind};
use bootfleet_api::{proto, validate};
use tonic::{Request, Response, Status};

use super::pb::{self, scripts_server::Scripts};
use super::{checked_id, invalid, list_params, status, Api, Call, Paged};
use crate::auth::Access;

fn kind(name: &str) -> Result<ScriptKind, Status> {
    ScriptKind::ALL
        .into_iter()
        .find(|k| k.name() == name)
        .ok_or_else(|| {
            let names: Vec<&str> = ScriptKind::ALL.iter().map(|k| k.name()).collect();
            invalid("kind", format!("must be one of {}", names.join(", ")))
        })
}

/// A delete: names the row by kind and id; the call, the kind and the row.
async fn by_id(
    api: &Api,
    req: Request<pb::ScriptRef>,
    access: Access,
    op: Op,
) -> Result<(Call, ScriptKind, proto::Script), Status> {
    let (call, r) = api.take(req, access)?;
    let kind = kind(&r.kind)?;
    let id = proto::IdRequest {
        id: checked_id(&r.id)?,
    };
    let row = api.ask(&call, &kind.subject(op), &id).await?;
    Ok((call, kind, row))
}

#[tonic::async_trait]
impl Scripts for Api {
    async fn list_scripts(
        &self,
        req: Request<pb::ListScriptsRequest>,
    ) -> Result<Response<pb::ScriptPage>, Status> {
        let (call, r) = self.take(req, Access::Read)?;
        let kind = kind(&r.kind)?;
        let params = list_params(r.list)?;
        let list: proto::ScriptList = self
            .ask(&call, &kind.subject(Op::List), &params.to_proto())
            .await?;
        Ok(Response::new(list.page(&params)))
    }

    async fn get_script(
        &self,
        req: Request<pb::ScriptRef>,
    ) -> Result<Response<proto::Script>, Status> {
        let (call, r) = self.take(req, Access::NodeRead)?;
        let kind = kind(&r.kind)?;
        let id = checked_id(&r.id)?;
        // Through the gateway's copy, as REST reads it: nodes fetch their scripts at every boot.
        let row = crate::routes::scripts::read(&self.state, &call.trace, kind, id)
            .await
            .map_err(status)?;
        // A node token bound to a site reads what is marked for its site or for every site.
        crate::auth::may_read(call.claims.as_ref(), &row.sites, &|| {
            format!("{} {}", kind.singular(), row.id)
        })
        .map_err(status)?;
        Ok(Response::new(std::sync::Arc::unwrap_or_clone(row)))
    }

    async fn create_script(
        &self,
        req: Request<pb::CreateScriptRequest>,
    ) -> Result<Response<proto::Script>, Status> {
        let (call, r) = self.take(req, Access::Write)?;
        let kind = kind(&r.kind)?;
        validate::text("text", &r.text).map_err(status)?;
        validate::sites("sites", &r.sites).map_err(status)?;
        let create = proto::CreateScript {
            id: uuid::Uuid::new_v4().to_string(),
            text: r.text,
            sites: r.sites,
        };
        self.answer(&call, &kind.subject(Op::Create), &create).await
    }

    async fn update_script(
        &self,
        req: Request<pb::UpdateScriptRequest>,
    ) -> Result<Response<proto::Script>, Status> {
        let (call, r) = self.take(req, Access::Write)?;
        let kind = kind(&r.kind)?;
        let id = checked_id(&r.id)?;
        validate::text("text", &r.text).map_err(status)?;
        validate::sites("sites", &r.sites).map_err(status)?;
        let update = proto::UpdateScript {
            id,
            text: r.text,
            sites: r.sites,
            replace_sites: r.replace_sites,
        };
        self.answer(&call, &kind.subject(Op::Update), &update).await
    }

    async fn delete_script(
        &self,
        req: Request<pb::ScriptRef>,
    ) -> Result<Response<proto::Script>, Status> {
        let (_, _, row) = by_id(self, req, Access::Write, Op::Delete).await?;
        Ok(Response::new(row))
    }
}
