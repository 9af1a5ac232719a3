//! The `actions` service over a real nats-server, with the real `machines` service beside it,
//! on SQLite and on a real PostgreSQL: the built-in commands, a group's members checked against
//! the machines service, and a power run recorded machine by machine (the machines service has
//! no power operation here, so the machine's error is what is recorded). Runs over SSH are in
//! the system test (`crates/bootfleet/tests/actions`), with the distributor and sshd.

use std::time::Duration;

use bootfleet_api::actions::{ops, CommandRow, RunEvent, RunRow};
use bootfleet_api::rest::Page;
use bootfleet_api::{proto, subjects, ErrorCode};
use bootfleet_bus::{Bus, BusConfig, TraceParent};
use bootfleet_service_kit::{start_one, Context};
use bootfleet_testkit::{database_url, Backend, NatsServer};
use futures_util::StreamExt;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);

async fn call(
    bus: &Bus,
    op: &str,
    c: proto::ActionsCall,
) -> Result<proto::ActionsReply, bootfleet_api::ApiError> {
    bus.request(&TraceParent::new_root(), &subjects::actions_op(op), &c)
        .await
}

fn admin(id: &str, body: serde_json::Value) -> proto::ActionsCall {
    proto::ActionsCall {
        id: id.into(),
        body: body.to_string(),
        actor: "tester".into(),
        role: "admin".into(),
        ..Default::default()
    }
}

async fn power_runs_are_recorded_per_machine(backend: Backend) {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let bus = Bus::connect(&BusConfig::new(nats.url(), "actions-test"))
        .await
        .expect("bus");
    let db = bootfleet_store::connect(&database_url(backend, dir.path()))
        .await
        .expect("db");
    let ctx = Context {
        bus: bus.clone(),
        db,
    };
    let machines = start_one(&ctx, &bootfleet_machines::service("http://127.0.0.1:8080"))
        .await
        .expect("machines");
    let actions = start_one(&ctx, &bootfleet_actions::service())
        .await
        .expect("actions");

    // The built-ins are there, and cannot be deleted.
    let list = call(
        &bus,
        ops::COMMAND_LIST,
        proto::ActionsCall {
            list: Some(proto::ListRequest {
                page: 1,
                page_size: 100,
                ..Default::default()
            }),
            ..admin("", json!({}))
        },
    )
    .await
    .expect("list");
    let page: Page<CommandRow> = serde_json::from_str(&list.body).expect("page");
    assert_eq!(page.total, 4);
    assert!(page
        .rows
        .iter()
        .all(|r| r.built_in && r.created_at.is_none()));
    let refused = call(&bus, ops::COMMAND_DELETE, admin("power-cycle", json!({})))
        .await
        .expect_err("built in");
    assert_eq!(refused.code, ErrorCode::Conflict);

    // A machine, through the machines service.
    let created: proto::MachinesReply = bus
        .request(
            &TraceParent::new_root(),
            &subjects::machines_op("create"),
            &proto::MachinesCall {
                id: uuid::Uuid::new_v4().to_string(),
                body: json!({"mac": "52:54:00:00:30:01", "name": "bmc-one", "artifactId": "s"})
                    .to_string(),
                actor: "tester".into(),
                role: "admin".into(),
                ..Default::default()
            },
        )
        .await
        .expect("machine");
    assert!(created.created);

    // A group's members must exist.
    let unknown = call(
        &bus,
        ops::GROUP_CREATE,
        admin("", json!({"name": "g", "members": ["bmc-one", "bmc-two"]})),
    )
    .await
    .expect_err("unknown member");
    assert_eq!(
        (unknown.code, unknown.field.as_deref()),
        (ErrorCode::InvalidArgument, Some("members"))
    );
    call(
        &bus,
        ops::GROUP_CREATE,
        admin("", json!({"name": "g", "members": ["bmc-one"]})),
    )
    .await
    .expect("group");

    // A power run on the group: its events, then its record.
    let run_id = uuid::Uuid::new_v4().to_string();
    let mut events = bus
        .client()
        .subscribe(subjects::run_events(&run_id))
        .await
        .expect("subscribe");
    bus.sync().await.expect("sync");
    let start = proto::ActionsCall {
        run_id: run_id.clone(),
        ..admin("power-status", json!({"groups": ["g"]}))
    };
    let started = call(&bus, ops::RUN_START, start.clone())
        .await
        .expect("started");
    assert!(started.created);
    let mut got = Vec::new();
    while got.last().map(|e: &RunEvent| e.done) != Some(Some(true)) {
        let msg = tokio::time::timeout(WAIT, events.next())
            .await
            .expect("an event")
            .expect("open");
        got.push(serde_json::from_slice(&msg.payload).expect("json"));
        assert!(got.len() < 10, "{got:?}");
    }
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0].machine.as_deref(), Some("bmc-one"));
    assert!(
        got[0].error.is_some() || got[0].power_state.is_some(),
        "{got:?}"
    );
    // Starting it again (a retry) answers the same run and starts nothing.
    let again = call(&bus, ops::RUN_START, start).await.expect("again");
    assert!(!again.created);
    let row: RunRow = serde_json::from_str(
        &call(&bus, ops::RUN_GET, admin(&run_id, json!({})))
            .await
            .expect("get")
            .body,
    )
    .expect("row");
    assert_eq!(
        (row.actor.as_str(), row.status.as_str()),
        ("tester", "done")
    );
    assert_eq!(row.machines.len(), 1);
    let m = &row.machines[0];
    assert_eq!(
        (m.machine.as_str(), m.variant.as_str()),
        ("bmc-one", "power")
    );
    assert_eq!(m.error, got[0].error);
    assert_eq!(m.power_state, got[0].power_state);
    assert!(m.finished_at.is_some());

    actions.stop().await;
    machines.stop().await;
}

bootfleet_testkit::on_both_backends!(power_runs_are_recorded_per_machine);
