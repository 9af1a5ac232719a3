//! `bootfleet.api.v1.LocalNodes`: the registered nodes of `/api/localnodes`.

use bootfleet_api::subjects::{self, Op};
use bootfleet_api::{proto, ApiError, ErrorCode};
use tonic::{Request, Response, Status};

use super::pb::{self, local_nodes_server::LocalNodes};
use super::{deadline_of, invalid, status, Api};
use crate::auth::Access;
use crate::routes::localnodes::run_node_script;

fn subject(op: Op) -> String {
    subjects::subject(subjects::LOCALNODES, op)
}

relayed_service! {
    impl LocalNodes {
        list_local_nodes: page(proto::LocalNodeList) => subject(Op::List);
        get_local_node: id(proto::LocalNode, Read) => subject(Op::Get);
        delete_local_node: id(proto::LocalNode, Write) => subject(Op::Delete);
    }

    async fn register_local_node(
        &self,
        req: Request<proto::RegisterLocalNode>,
    ) -> Result<Response<proto::RegisteredLocalNode>, Status> {
        let (call, register) = self.take(req, Access::NodeWrite)?;
        if register.ip.is_empty() {
            return Err(invalid("ip", "is required"));
        }
        if register.artifact_id.is_empty() {
            return Err(invalid("artifactId", "is required"));
        }
        // A node token scoped to a site registers nodes of that site only (as on REST); the
        // service checks every field by name.
        if let Some(site) = call
            .claims
            .as_ref()
            .and_then(|c| c.site.as_deref())
            .filter(|site| *site != register.artifact_id)
        {
            return Err(status(ApiError::new(
                ErrorCode::PermissionDenied,
                format!(
                    "artifactId: this node token is for site {site:?}, not {:?}",
                    register.artifact_id
                ),
            )));
        }
        self.answer(&call, &subject(Op::Create), &register).await
    }

    async fn run_local_node_script(
        &self,
        req: Request<proto::RunNodeScript>,
    ) -> Result<Response<proto::NodeExecResult>, Status> {
        let call = self.authorize(&req, Access::Write)?;
        let deadline = deadline_of(&req);
        let result = run_node_script(self.bus(), &call.trace, &deadline, req.into_inner())
            .await
            .map_err(status)?;
        Ok(Response::new(result))
    }
}
