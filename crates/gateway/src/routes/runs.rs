//! Runs of commands: `POST /api/commands/{name}/runs` streams a run as it happens, as
//! newline-delimited JSON over chunked HTTP (`curl -N`); `GET /api/runs` and
//! `GET /api/runs/{id}` show what runs did (who, when, each machine's variant, exit code or
//! error and the tail of its output).
//!
//! Nothing is lost at the start: the gateway chooses the run's id, subscribes to the run's
//! events subject and makes sure nats-server has the subscription before it asks the `actions`
//! service to start the run. A refused run (unknown machine, bad field) is an ordinary JSON
//! error before any line is streamed.

use std::time::Duration;

use axum::extract::{Extension, Path};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bootfleet_api::actions::{ops, RunEvent, RunInput, RunRow, DEFAULT_TIMEOUT_SECONDS};
use bootfleet_api::{proto, subjects, ApiError};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};

use super::actions::NAME;
use super::relay::{by_key, list, Id, Relay};
use super::{list_query, Body, BodySchema, RouteDef, ID};
use crate::auth::Access;
use crate::http::{HttpResult, JsonBody};
use crate::server::Stopping;

/// How long the stream waits past a machine's timeout for the next line before it gives up on
/// the run (the service that ran it is gone); the run's record still says how it ended.
const SILENCE_GRACE: Duration = Duration::from_secs(60);

fn line(event: &RunEvent) -> Bytes {
    let mut text = serde_json::to_vec(event).unwrap_or_default();
    text.push(b'\n');
    Bytes::from(text)
}

async fn start_run(
    r: Relay,
    Path(name): Path<String>,
    stopping: Option<Extension<Stopping>>,
    JsonBody(body): JsonBody<RunInput>,
) -> HttpResult<Response> {
    let (run_id, events) = start(&r, name, &body, stopping.map(|Extension(s)| s)).await?;
    let stream = events.map(|event| Ok::<Bytes, std::convert::Infallible>(line(&event)));
    let mut response = (StatusCode::OK, axum::body::Body::from_stream(stream)).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(v) = HeaderValue::from_str(&format!("/api/runs/{run_id}")) {
        headers.insert(header::LOCATION, v);
    }
    Ok(response)
}

/// Starts a run of command `name` (REST's and gRPC's): its id and its events, `{run,
/// machines}` first and `{run, done}` last (or an `error` event when the stream ends before
/// the run: silence past the timeout, or `stopping`). A refused run is an error before any
/// event.
pub(crate) async fn start(
    r: &Relay,
    name: String,
    body: &RunInput,
    stopping: Option<Stopping>,
) -> Result<(String, impl Stream<Item = RunEvent> + Send + 'static), ApiError> {
    bootfleet_api::actions::name("name", &name)?;
    let run_id = uuid::Uuid::new_v4().to_string();
    let silence = Duration::from_secs(u64::from(
        body.timeout_seconds.unwrap_or(DEFAULT_TIMEOUT_SECONDS),
    )) + SILENCE_GRACE;
    let unavailable =
        |e: &dyn std::fmt::Display| ApiError::unavailable(format!("cannot follow the run: {e}"));
    let events = r
        .bus
        .client()
        .subscribe(subjects::run_events(&run_id))
        .await
        .map_err(|e| unavailable(&e))?;
    r.bus.sync().await.map_err(|e| unavailable(&e))?;
    let mut call = r.call_with::<proto::ActionsCall, _>(name, body)?;
    call.run_id = run_id.clone();
    let reply = r.ask(ops::RUN_START, call).await?;
    let row: RunRow = serde_json::from_str(&reply.body).map_err(|e| {
        ApiError::internal(format!(
            "the actions service answered a run that does not parse: {e}"
        ))
    })?;
    let first = RunEvent {
        run: Some(row.id.clone()),
        machines: Some(row.machines.iter().map(|m| m.machine.clone()).collect()),
        ..Default::default()
    };
    let following = Following {
        events,
        stopping,
        silence,
        run_id: run_id.clone(),
        done: false,
    };
    let rest = futures_util::stream::unfold(following, |mut f| async move {
        if f.done {
            return None;
        }
        let next = async {
            tokio::time::timeout(f.silence, f.events.next())
                .await
                .ok()
                .flatten()
        };
        let msg = match &mut f.stopping {
            Some(stopping) => tokio::select! {
                msg = next => msg,
                () = stopping.wait() => None,
            },
            None => next.await,
        };
        let event = match msg {
            Some(msg) => {
                let event: RunEvent = serde_json::from_slice(&msg.payload).unwrap_or_default();
                f.done = event.done == Some(true);
                event
            }
            None => {
                // Silence or shutdown: say so and end; the run's record has the rest.
                f.done = true;
                RunEvent {
                    run: Some(f.run_id.clone()),
                    error: Some(format!(
                        "the stream ended before the run did; see /api/runs/{}",
                        f.run_id
                    )),
                    ..Default::default()
                }
            }
        };
        Some((event, f))
    });
    Ok((
        run_id,
        futures_util::stream::once(async move { first }).chain(rest),
    ))
}

struct Following {
    events: async_nats::Subscriber,
    stopping: Option<Stopping>,
    silence: Duration,
    run_id: String,
    done: bool,
}

pub(super) fn routes() -> Vec<RouteDef> {
    let r = "runs";
    vec![
        RouteDef::new(Method::POST, "/api/commands/{name}/runs", Access::Write, start_run)
            .doc(r, "runCommand", "Run a command on machines and groups (each machine runs the variant of its first rank that has one, else the default; over SSH through its site's distributor, `concurrency` at a time; its name, address and metadata as environment variables `BF_NODE_NAME`, `BF_NODE_ADDRESS`, `BF_META_<KEY>`, ...). Streams newline-delimited JSON as it happens: `{run, machines}` first, then `{machine, stream, line}` per output line, `{machine, exitCode}` or `{machine, error}` (or `{machine, powerState}` for a power command) per machine, and `{run, done: true}` last. A bad request is refused before anything runs")
            .params(vec![NAME])
            .body(BodySchema::of::<RunInput>())
            .answers(200, Body::NdJson(BodySchema::of::<RunEvent>())),
        RouteDef::new(Method::GET, "/api/runs", Access::Read, list::<proto::ActionsCall>)
            .with(ops::RUN_LIST)
            .doc(r, "listRuns", "List runs (search command, actor, status), with each machine's result")
            .params(list_query(bootfleet_api::list::fields::RUNS))
            .answers(200, Body::Json(BodySchema::page_of::<RunRow>())),
        RouteDef::new(Method::GET, "/api/runs/{id}", Access::Read, by_key::<proto::ActionsCall, Id>)
            .with(ops::RUN_GET)
            .doc(r, "getRun", "One run: who started it and when, and per machine the variant run, its exit code or error, and the last 64 KiB of its output")
            .params(vec![ID])
            .answers(200, Body::json::<RunRow>()),
    ]
}
