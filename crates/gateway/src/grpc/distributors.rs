//! `bootfleet.api.v1.Distributors`: the site agents of `/api/distributors`, and their boot
//! events as `/api/distributors/{id}/events` streams them.

use std::pin::Pin;

use bootfleet_api::subjects::{self, Op};
use bootfleet_api::{proto, validate, ApiError};
use bootfleet_bus::BootEventItem;
use futures_util::Stream;
use tonic::{Request, Response, Status};

use super::pb::{self, distributors_server::Distributors};
use super::{checked_id, deadline_of, id_request, status, Api};
use crate::auth::Access;
use crate::routes::distributors::configure_distributor;

/// Events a reader may fall behind by before they are dropped (as on REST).
const QUEUE: usize = 256;

fn subject(op: Op) -> String {
    subjects::subject(subjects::DISTRIBUTORS, op)
}

type BootEventStream = Pin<Box<dyn Stream<Item = Result<proto::BootEvent, Status>> + Send>>;

relayed_service! {
    impl Distributors {
        list_distributors: page(proto::DistributorList) => subject(Op::List);
        get_distributor: id(proto::Distributor, Read) => subject(Op::Get);
    }

    async fn set_distributor_status(
        &self,
        req: Request<proto::SetDistributorStatus>,
    ) -> Result<Response<proto::Distributor>, Status> {
        let (call, mut set) = self.take(req, Access::Write)?;
        set.id = checked_id(&set.id)?;
        if !set.artifact_id.is_empty() {
            validate::artifact_id("artifactId", &set.artifact_id).map_err(status)?;
        }
        self.answer(&call, &subjects::distributor_set_status(), &set)
            .await
    }

    async fn configure_distributor(
        &self,
        req: Request<proto::ConfigureDistributor>,
    ) -> Result<Response<proto::Distributor>, Status> {
        let call = self.authorize(&req, Access::Write)?;
        let deadline = deadline_of(&req);
        // No host: an artifact is named by its path or id here, not by a URL.
        let row = configure_distributor(self.bus(), &call.trace, &deadline, req.into_inner(), None)
            .await
            .map_err(status)?;
        Ok(Response::new(row))
    }

    type WatchBootEventsStream = BootEventStream;

    async fn watch_boot_events(
        &self,
        req: Request<proto::IdRequest>,
    ) -> Result<Response<BootEventStream>, Status> {
        let call = self.authorize(&req, Access::Read)?;
        let id = id_request(req.into_inner())?;
        let row: proto::Distributor = self.ask(&call, &subject(Op::Get), &id).await?;
        let site = row.artifact_id;
        let events = self
            .bus()
            .boot_events(&site, None, QUEUE)
            .await
            .map_err(|e| {
                status(ApiError::unavailable(format!(
                    "cannot follow the boot events of {site}: {e}"
                )))
            })?;
        // Ends when the client hangs up (tonic drops the stream, and with it the subscription)
        // or the bus connection closes.
        let stream = futures_util::stream::unfold(events, move |mut events| {
            let site = site.clone();
            async move {
                let event = match events.next().await? {
                    BootEventItem::Event(event) => event,
                    // A gap is an event of its own, so the reader knows it missed some.
                    BootEventItem::Missed(missed) => proto::BootEvent {
                        artifact_id: site,
                        kind: "gap".into(),
                        detail: format!("{missed} events missed: this reader fell behind"),
                        ..Default::default()
                    },
                };
                Some((Ok(event), events))
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }
}
