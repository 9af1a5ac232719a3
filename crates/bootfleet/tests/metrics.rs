//! `/metrics` after real traffic, parsed as OpenMetrics text: the gateway's (in `bootfleet up`'s
//! shape, every service in this process) and a `bootfleet service` process's tokenless
//! listener. Its own test binary: the registry is per process, so counts here are exact.

#[path = "support/http.rs"]
mod plain;
mod support;

use std::time::Duration;

use bootfleet_api::proto;
use bootfleet_api::subjects::{Op, ScriptKind};
use bootfleet_bus::{Bus, BusConfig, TraceParent};
use bootfleet_gateway::auth::Role;
use bootfleet_testkit::metrics::Scrape;
use bootfleet_testkit::{database_url, Backend, ChildGuard, NatsServer};
use serde_json::{json, Value};

async fn scrape(http: &reqwest::Client, url: &str, token: Option<&str>) -> Scrape {
    let response = plain::get(http, url, token).await;
    assert_eq!(response.status(), 200);
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let text = response.text().await.expect("body");
    Scrape::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_metrics_count_requests_by_route_bus_requests_and_builds() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let system = support::start_system(&nats, dir.path()).await;
    let base = system.base_url();
    let admin = support::token(Role::Admin);
    let user = support::token(Role::User);
    let node = support::token(Role::Node);
    let http = reqwest::Client::new();
    let metrics = format!("{base}/metrics");

    // Services talk among themselves too: bus series are compared with this first page.
    let before = scrape(&http, &metrics, Some(&user)).await;
    // The API's listener wants an operator token for its metrics.
    let anonymous = plain::get(&http, &metrics, None).await;
    assert_eq!(anonymous.status(), 401);
    let as_node = plain::get(&http, &metrics, Some(&node)).await;
    assert_eq!(as_node.status(), 403);

    let mainscripts = format!("{base}/api/mainscripts");
    let mut created = Vec::new();
    for i in 0..3 {
        let body = json!({"text": format!("#!ipxe\necho {i}")});
        let row: Value = support::post_created(&http, &mainscripts, &admin, body)
            .await
            .json()
            .await
            .expect("json");
        created.push(row["id"].as_str().expect("id").to_owned());
    }
    // A node reads one script twice: the service answers the first, the gateway's copy the second.
    for _ in 0..2 {
        let read = plain::get(&http, &format!("{mainscripts}/{}", created[0]), Some(&node)).await;
        assert_eq!(read.status(), 200);
    }
    for _ in 0..2 {
        let url = format!("{base}/api/mainscripts/{}", uuid::Uuid::new_v4());
        let missing = plain::get(&http, &url, Some(&admin)).await;
        assert_eq!(missing.status(), 404);
    }
    let url = format!("{base}/no/such/route/{}", uuid::Uuid::new_v4());
    let unrouted = plain::get(&http, &url, None).await;
    assert_eq!(unrouted.status(), 404);

    // A build, so the builders' series has an outcome.
    let syslinuxs = format!("{base}/api/syslinuxs");
    let body = json!({"fragment": "isolinux.bin"});
    let built = support::post_created(&http, &syslinuxs, &admin, body).await;
    let id = built.json::<Value>().await.expect("json")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let mut status = Value::Null;
    for _ in 0..600 {
        let row = plain::get_json(&http, &format!("{base}/api/syslinuxs/{id}"), Some(&admin)).await;
        status = row["status"].clone();
        if status == "done" || status == "failed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, "done");

    let page = scrape(&http, &metrics, Some(&user)).await;
    let requests = "bootfleet_http_requests";
    let count = |route, method, status| {
        page.total(
            requests,
            &[("route", route), ("method", method), ("status", status)],
        )
    };
    assert_eq!(count("/api/mainscripts", "POST", "201"), Some(3.0));
    // The route template, never the raw path with its id.
    assert_eq!(count("/api/mainscripts/{id}", "GET", "404"), Some(2.0));
    assert_eq!(count("/api/mainscripts/{id}", "GET", "200"), Some(2.0));
    let lookups = |result| {
        page.total(
            "bootfleet_gateway_script_cache_lookups",
            &[("kind", "mainscripts"), ("result", result)],
        )
    };
    // The two reads of missing ids and the first read of the script went to the service.
    assert_eq!(lookups("miss"), Some(3.0));
    assert_eq!(lookups("hit"), Some(1.0));
    assert_eq!(count("unmatched", "GET", "404"), Some(1.0));
    assert_eq!(count("/metrics", "GET", "401"), Some(1.0));
    assert_eq!(count("/metrics", "GET", "403"), Some(1.0));
    assert!(
        page.label_values(requests, "route")
            .iter()
            .all(|r| !r.contains(&id) && !r.starts_with("/no/")),
        "raw paths leaked into labels: {:?}",
        page.label_values(requests, "route")
    );
    assert_eq!(
        page.total(
            "bootfleet_http_request_duration_seconds",
            &[("route", "/api/mainscripts"), ("method", "POST")]
        ),
        Some(3.0)
    );

    // The gateway's bus requests and, in this one process, the services' side of them.
    let create = ScriptKind::Mainscripts.subject(Op::Create);
    let get = ScriptKind::Mainscripts.subject(Op::Get);
    let added = |family: &str, labels: &[(&str, &str)]| {
        page.total(family, labels).unwrap_or(0.0) - before.total(family, labels).unwrap_or(0.0)
    };
    let sent = "bootfleet_nats_request_duration_seconds";
    let handled = "bootfleet_nats_handled_duration_seconds";
    assert_eq!(added(sent, &[("subject", &create), ("outcome", "ok")]), 3.0);
    assert_eq!(
        added(sent, &[("subject", &get), ("outcome", "not_found")]),
        2.0
    );
    assert_eq!(
        added(handled, &[("subject", &create), ("status", "ok")]),
        3.0
    );
    assert_eq!(
        added(handled, &[("subject", &get), ("status", "not_found")]),
        2.0
    );
    for family in [
        "bootfleet_nats_request_errors",
        "bootfleet_nats_reconnects",
        "bootfleet_nats_disconnects",
    ] {
        assert!(page.has(family), "{family} missing");
    }
    assert_eq!(
        page.total(
            "bootfleet_build_duration_seconds",
            &[("kind", "syslinuxs"), ("outcome", "done")]
        ),
        Some(1.0)
    );
    system.stop().await;
}

/// `message` with the bearer `token` in its metadata.
fn authed<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut req = tonic::Request::new(message);
    let value = format!("Bearer {token}").parse().expect("ascii");
    req.metadata_mut().insert("authorization", value);
    req
}

/// gRPC calls on the gateway's page: by service, method and status code, a stream counted when
/// it ends (here: the client hangs up, `CANCELLED`), a client's made-up service not a label.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_calls_are_counted_by_service_method_and_code() {
    use bootfleet_gateway::grpc::pb;
    use futures_util::StreamExt;

    let nats = NatsServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let system = support::start_system_with_grpc(&nats, dir.path()).await;
    let admin = support::token(Role::Admin);
    let user = support::token(Role::User);
    let channel = tonic::transport::Channel::from_shared(system.grpc_url().expect("grpc url"))
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let mut scripts = pb::scripts_client::ScriptsClient::new(channel.clone());
    let mut machines = pb::machines_client::MachinesClient::new(channel.clone());
    let create = || pb::CreateScriptRequest {
        kind: "mainscripts".into(),
        text: "#!ipxe\nshell".into(),
        ..Default::default()
    };
    for _ in 0..2 {
        scripts
            .create_script(authed(create(), &admin))
            .await
            .expect("create");
    }
    let missing = pb::ScriptRef {
        kind: "mainscripts".into(),
        id: uuid::Uuid::new_v4().to_string(),
    };
    let not_found = scripts
        .get_script(authed(missing, &admin))
        .await
        .expect_err("missing");
    assert_eq!(not_found.code(), tonic::Code::NotFound);
    let refused = scripts
        .create_script(tonic::Request::new(create()))
        .await
        .expect_err("no token");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    let machine = machines
        .create_machine(authed(
            pb::JsonWrite {
                key: String::new(),
                json: json!({"mac": "52:54:00:00:50:01", "artifactId": "site-1"}).to_string(),
            },
            &admin,
        ))
        .await
        .expect("create machine")
        .into_inner();
    let id: Value = serde_json::from_str(&machine.json).expect("json");
    let mut steps = machines
        .watch_machine_timeline(authed(
            proto::IdRequest {
                id: id["id"].as_str().expect("id").to_owned(),
            },
            &admin,
        ))
        .await
        .expect("watch")
        .into_inner();
    // The machine has no boot yet: nothing comes; the client hangs up.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), steps.next())
            .await
            .is_err()
    );
    drop(steps);
    // Not a service of the API: counted, but not under the name the client made up.
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.expect("ready");
    let made_up: Result<tonic::Response<proto::IdRequest>, _> = grpc
        .unary(
            tonic::Request::new(proto::IdRequest::default()),
            "/made.up.Service/Steal".parse().expect("path"),
            tonic_prost::ProstCodec::default(),
        )
        .await;
    assert_eq!(
        made_up.expect_err("no such service").code(),
        tonic::Code::Unimplemented
    );

    let http = reqwest::Client::new();
    let metrics = format!("{}/metrics", system.base_url());
    let calls = "bootfleet_grpc_requests";
    let count = |page: &Scrape, service: &str, method: &str, code: &str| {
        page.total(
            calls,
            &[("service", service), ("method", method), ("code", code)],
        )
    };
    let scripts_service = "bootfleet.api.v1.Scripts";
    // The hung-up stream ends on the server a moment after the client drops it.
    let mut page = scrape(&http, &metrics, Some(&user)).await;
    for _ in 0..50 {
        if count(
            &page,
            "bootfleet.api.v1.Machines",
            "WatchMachineTimeline",
            "CANCELLED",
        )
        .is_some()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        page = scrape(&http, &metrics, Some(&user)).await;
    }
    assert_eq!(
        count(&page, scripts_service, "CreateScript", "OK"),
        Some(2.0)
    );
    assert_eq!(
        count(&page, scripts_service, "GetScript", "NOT_FOUND"),
        Some(1.0)
    );
    assert_eq!(
        count(&page, scripts_service, "CreateScript", "UNAUTHENTICATED"),
        Some(1.0)
    );
    assert_eq!(
        count(&page, "bootfleet.api.v1.Machines", "CreateMachine", "OK"),
        Some(1.0)
    );
    assert_eq!(
        count(
            &page,
            "bootfleet.api.v1.Machines",
            "WatchMachineTimeline",
            "CANCELLED"
        ),
        Some(1.0)
    );
    assert_eq!(
        count(&page, "unknown", "unknown", "UNIMPLEMENTED"),
        Some(1.0)
    );
    assert!(
        page.label_values(calls, "service")
            .iter()
            .all(|s| !s.contains("made.up")),
        "{:?}",
        page.label_values(calls, "service")
    );
    assert_eq!(
        page.total(
            "bootfleet_grpc_request_duration_seconds",
            &[("service", scripts_service), ("method", "CreateScript")]
        ),
        Some(3.0)
    );
    system.stop().await;
}

/// `bootfleet service kickstarts` with `BOOTFLEET_METRICS_LISTEN`: its own page, without a
/// token, counts what it answered and that it got NATS back after a restart. (Kickstarts: the
/// other test of this process asks the mainscripts subjects, and the registry is shared.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_process_serves_its_metrics_on_its_own_listener() {
    let mut nats = NatsServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let listen = format!("127.0.0.1:{}", bootfleet_testkit::free_port());
    let _service = ChildGuard(
        std::process::Command::new(env!("CARGO_BIN_EXE_bootfleet"))
            .args(["service", "kickstarts"])
            .env("NATS_URL", nats.url())
            .env("DATABASE_URL", database_url(Backend::Sqlite, dir.path()))
            .env("BOOTFLEET_DATA_DIR", dir.path())
            .env("BOOTFLEET_METRICS_LISTEN", &listen)
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("start bootfleet service"),
    );
    let bus = Bus::connect(&BusConfig::new(nats.url(), "metrics-test"))
        .await
        .expect("connect");
    let up = bootfleet_testkit::eventually(
        Duration::from_secs(10),
        Duration::from_millis(100),
        || async { bus.ping("kickstarts").await.is_ok() },
    )
    .await;
    assert!(up, "the service did not answer within 10 s");
    let list = ScriptKind::Kickstarts.subject(Op::List);
    for _ in 0..3 {
        let _: proto::ScriptList = bus
            .request(
                &TraceParent::new_root(),
                &list,
                &proto::ListRequest::default(),
            )
            .await
            .expect("list");
    }
    let get = ScriptKind::Kickstarts.subject(Op::Get);
    let missing = bus
        .request::<_, proto::Script>(
            &TraceParent::new_root(),
            &get,
            &proto::IdRequest {
                id: uuid::Uuid::new_v4().to_string(),
            },
        )
        .await;
    assert!(missing.is_err());

    let http = reqwest::Client::new();
    let url = format!("http://{listen}/metrics");
    let page = scrape(&http, &url, None).await;
    let handled = "bootfleet_nats_handled_duration_seconds";
    assert_eq!(
        page.total(handled, &[("subject", &list), ("status", "ok")]),
        Some(3.0)
    );
    assert_eq!(
        page.total(handled, &[("subject", &get), ("status", "not_found")]),
        Some(1.0)
    );
    assert_eq!(page.total("bootfleet_nats_reconnects", &[]), Some(0.0));
    // No gateway in this process: no HTTP request series with samples.
    assert_eq!(page.total("bootfleet_http_requests", &[]), None);

    nats.restart();
    let mut reconnected = None;
    for _ in 0..100 {
        let page = scrape(&http, &url, None).await;
        if page.total("bootfleet_nats_reconnects", &[]) >= Some(1.0) {
            reconnected = page.total("bootfleet_nats_disconnects", &[]);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        reconnected >= Some(1.0),
        "no reconnect counted within 10 s of a nats-server restart"
    );
}
