//! `GET /api/distributors/{id}/events`: the boot events of a distributor's site as they happen,
//! as server-sent events, for an operator to watch (`curl -N`). Bounded: a comment goes out
//! every `event_keep_alive` (a client that went away is noticed when that write fails, and the
//! stream with its subscription is dropped), the stream ends when the gateway stops, and a
//! reader that falls behind loses events, counted in a `gap` event, rather than having the
//! gateway hold them for it.

use std::convert::Infallible;

use axum::extract::{Path, RawQuery, State};
use axum::http::Method;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use bootfleet_api::rest::BootEventRow;
use bootfleet_api::subjects::{self, Op};
use bootfleet_api::{proto, validate, ApiError};
use bootfleet_bus::{BootEventItem, BootEvents};
use futures_util::StreamExt;

use super::{path_id, query_pairs, Body, Param, ParamType, RouteDef, ID};
use crate::auth::Access;
use crate::http::{HttpResult, Trace};
use crate::server::Stopping;
use crate::AppState;

/// Events a reader may fall behind by before they are dropped (a few hundred bytes each).
const QUEUE: usize = 256;

const MAC: Param = Param {
    name: "mac",
    in_path: false,
    required: false,
    ty: ParamType::Pattern(bootfleet_api::rules::mac_pattern),
    description: "Only this client's events (`52:54:00:12:34:56`).",
};

pub(super) fn routes() -> Vec<RouteDef> {
    vec![
        RouteDef::new(Method::GET, "/api/distributors/{id}/events", Access::Read, watch)
            .doc("distributors", "watchDistributorEvents", "The boot events of the distributor's site as they happen (DHCP answers, files served), as server-sent events")
            .params(vec![ID, MAC])
            .answers(200, Body::event_stream::<BootEventRow>())]
}

/// The `mac` query parameter, normalized; `token` is the auth layer's.
fn mac_filter(raw: Option<&str>) -> Result<Option<String>, ApiError> {
    let mut mac = None;
    for (key, value) in query_pairs(raw)? {
        match key.as_str() {
            "mac" => mac = Some(validate::mac("mac", &value)?),
            "token" => {}
            other => {
                return Err(ApiError::invalid(
                    other,
                    "unknown query parameter (expected mac)",
                ))
            }
        }
    }
    Ok(mac)
}

async fn watch(
    State(s): State<AppState>,
    Trace(t): Trace,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    stopping: Option<Extension<Stopping>>,
) -> HttpResult<Response> {
    let mac = mac_filter(query.as_deref())?;
    let req = proto::IdRequest { id: path_id(&id)? };
    let row: proto::Distributor = s
        .bus
        .request(
            &t,
            &subjects::subject(subjects::DISTRIBUTORS, Op::Get),
            &req,
        )
        .await?;
    let site = row.artifact_id;
    let events = s
        .bus
        .boot_events(&site, mac.clone(), QUEUE)
        .await
        .map_err(|e| {
            ApiError::unavailable(format!("cannot follow the boot events of {site}: {e}"))
        })?;
    // Once this is sent, every event the site publishes reaches the client.
    let ready = json_event(
        "ready",
        &serde_json::json!({ "artifactId": site, "mac": mac }),
    );
    let watching = Watching {
        events,
        stopping: stopping.map(|Extension(s)| s),
    };
    let stream = futures_util::stream::once(async { Ok::<Event, Infallible>(ready) }).chain(
        futures_util::stream::unfold(watching, |mut w| async move {
            let item = match &mut w.stopping {
                Some(stopping) => tokio::select! {
                    item = w.events.next() => item,
                    () = stopping.wait() => None,
                },
                None => w.events.next().await,
            }?;
            Some((Ok::<Event, Infallible>(sse_event(item)), w))
        }),
    );
    let keep_alive = KeepAlive::new()
        .interval(s.config.limits.event_keep_alive)
        .text("keep-alive");
    Ok(Sse::new(stream).keep_alive(keep_alive).into_response())
}

struct Watching {
    events: BootEvents,
    stopping: Option<Stopping>,
}

fn sse_event(item: BootEventItem) -> Event {
    match item {
        BootEventItem::Event(event) => {
            let name = event_name(&event.kind).to_owned();
            json_event(&name, &BootEventRow::from(event))
        }
        BootEventItem::Missed(missed) => {
            json_event("gap", &serde_json::json!({ "missed": missed }))
        }
    }
}

/// The SSE event name for a kind: the kind itself when it is a plain word (it comes from a
/// distributor, and a line break in it would end the field), else `boot`.
fn event_name(kind: &str) -> &str {
    let plain = !kind.is_empty()
        && kind.len() <= 32
        && kind
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if plain {
        kind
    } else {
        "boot"
    }
}

fn json_event(name: &str, data: &impl serde::Serialize) -> Event {
    Event::default()
        .event(name)
        .json_data(data)
        .unwrap_or_else(|_| Event::default().comment("an event that cannot be written as json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_names_are_plain_words_only() {
        assert_eq!(event_name("dhcp_answered"), "dhcp_answered");
        assert_eq!(event_name("tftp_served"), "tftp_served");
        for odd in [
            "",
            "x\ndata: forged",
            "x\revent",
            "Tftp",
            "a b",
            &"x".repeat(33),
        ] {
            assert_eq!(event_name(odd), "boot", "{odd:?}");
        }
    }

    #[test]
    fn the_mac_filter_is_validated_and_named() {
        assert_eq!(mac_filter(None), Ok(None));
        assert_eq!(
            mac_filter(Some("mac=52-54-00-AB-CD-EF")),
            Ok(Some("52:54:00:ab:cd:ef".into()))
        );
        assert_eq!(mac_filter(Some("token=x")), Ok(None));
        let bad = mac_filter(Some("mac=52:54:00")).expect_err("short");
        assert_eq!(bad.field.as_deref(), Some("mac"));
        let unknown = mac_filter(Some("site=a")).expect_err("unknown");
        assert_eq!(unknown.field.as_deref(), Some("site"));
    }
}
