//! The bus against a real `nats-server`.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use bootfleet_api::{proto, ApiError, ErrorCode};
use bootfleet_bus::{Bus, BusConfig, ServiceBuilder, TraceParent};
use bootfleet_testkit::NatsServer;
use futures_util::StreamExt;

const ECHO: &str = "bootfleet.v1.test.echo";
const SLOW: &str = "bootfleet.v1.test.slow";

async fn bus(nats: &NatsServer, timeout_ms: u64, attempts: u32) -> Bus {
    let mut config = BusConfig::new(nats.url(), "bus-test");
    config.request_timeout = Duration::from_millis(timeout_ms);
    config.attempts = attempts;
    Bus::connect(&config).await.expect("connect")
}

/// A test service: `echo` answers with the trace id it saw as `id` and the text, or refuses an
/// empty text naming the field; `slow` sleeps for the number of ms in `text`.
async fn start_test_service(bus: Bus) -> bootfleet_bus::RunningService {
    ServiceBuilder::new(bus, "test")
        .route(
            ECHO.to_owned(),
            |ctx, req: proto::CreateScript| async move {
                if req.text.is_empty() {
                    return Err(ApiError::invalid("text", "must not be empty"));
                }
                Ok(proto::Script {
                    id: ctx.trace.trace_id(),
                    text: req.text,
                    ..Default::default()
                })
            },
        )
        .route(SLOW.to_owned(), |_, req: proto::CreateScript| async move {
            let ms = req.text.parse().unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(proto::Empty {})
        })
        .start()
        .await
        .expect("start service")
}

fn echo(text: &str) -> proto::CreateScript {
    proto::CreateScript {
        id: String::new(),
        text: text.to_owned(),
        sites: Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_errors_and_trace_context_cross_the_bus() {
    let nats = NatsServer::start();
    let bus = bus(&nats, 2000, 1).await;
    let service = start_test_service(bus.clone()).await;
    let trace = TraceParent::new_root();
    let reply: proto::Script = bus
        .request(&trace, ECHO, &echo("hello"))
        .await
        .expect("echo");
    assert_eq!(reply.text, "hello");
    assert_eq!(
        reply.id,
        trace.trace_id(),
        "the handler sees the caller's trace"
    );

    let err = bus
        .request::<_, proto::Script>(&trace, ECHO, &echo(""))
        .await
        .expect_err("refused");
    assert_eq!(err.code, ErrorCode::InvalidArgument);
    assert_eq!(err.field.as_deref(), Some("text"));

    // Bytes that are no protobuf message get an invalid_argument reply; the service lives on.
    let raw = bus
        .client()
        .request(ECHO, bytes::Bytes::from_static(b"\xff\xff\xff\xff"))
        .await
        .expect("a reply to garbage");
    let headers = raw.headers.expect("reply headers");
    assert_eq!(
        headers
            .get(bootfleet_bus::STATUS_HEADER)
            .map(|v| v.as_str()),
        Some("error")
    );
    let err = ApiError::from_proto(prost::Message::decode(raw.payload).expect("service error"));
    assert_eq!(err.code, ErrorCode::InvalidArgument);
    let pong = bus.ping("test").await.expect("still alive");
    assert_eq!(pong.service, "test");
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_responders_and_timeouts_are_clear_errors() {
    let nats = NatsServer::start();
    let bus = bus(&nats, 300, 2).await;
    let trace = TraceParent::new_root();
    let started = Instant::now();
    let err = bus
        .request::<_, proto::Script>(&trace, ECHO, &echo("x"))
        .await
        .expect_err("nobody listens");
    assert_eq!(err.code, ErrorCode::Unavailable);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "no-responders must not wait out the timeout"
    );

    let service = start_test_service(bus.clone()).await;
    let err = bus
        .request::<_, proto::Empty>(&trace, SLOW, &echo("1500"))
        .await
        .expect_err("too slow");
    assert_eq!(err.code, ErrorCode::Timeout);
    assert_eq!(err.code.http_status(), 504);
    // A longer per-request timeout lets the same call through.
    bus.with_timeout(Duration::from_secs(5), 1)
        .request::<_, proto::Empty>(&trace, SLOW, &echo("200"))
        .await
        .expect("patient request");
    service.stop().await;
}

/// An attempt that timed out may have been taken: when a later attempt meets no responders (the
/// instance that took it died, or NATS came back before the services), the outcome is unknown
/// (504 timeout), never "not taken" (503), which a client would retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_may_have_been_taken_is_never_reported_as_not_taken() {
    const TAKEN: &str = "bootfleet.v1.test.taken";
    let nats = NatsServer::start();
    let bus = bus(&nats, 300, 3).await;
    // A responder that takes the first request, never answers, and goes away.
    let mut taker = bus.client().subscribe(TAKEN).await.expect("subscribe");
    bus.client().flush().await.expect("flush");
    let taken = tokio::spawn(async move {
        let first = taker.next().await.expect("the first attempt arrives");
        taker.unsubscribe().await.expect("unsubscribe");
        first
    });
    let err = bus
        .request::<_, proto::Script>(&TraceParent::new_root(), TAKEN, &echo("x"))
        .await
        .expect_err("no answer");
    taken.await.expect("the request was taken");
    assert_eq!(err.code, ErrorCode::Timeout, "{err:?}");
    assert!(
        err.message.starts_with("outcome unknown"),
        "{}",
        err.message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_and_services_reconnect_after_a_nats_restart() {
    let mut nats = NatsServer::start();
    let client = bus(&nats, 500, 1).await;
    let service_bus = bus(&nats, 500, 1).await;
    let service = start_test_service(service_bus).await;
    let trace = TraceParent::new_root();
    client
        .request::<_, proto::Script>(&trace, ECHO, &echo("before"))
        .await
        .expect("before restart");

    nats.restart();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match client
            .request::<_, proto::Script>(&trace, ECHO, &echo("after"))
            .await
        {
            Ok(reply) => {
                assert_eq!(reply.text, "after");
                break;
            }
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "no reply 20 s after the restart: {e}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    assert!(client.is_connected());
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_sync_the_server_has_the_subscriptions_sent_before() {
    let nats = NatsServer::start();
    let listener = async_nats::connect(nats.url()).await.expect("connect");
    let publisher = async_nats::connect(nats.url()).await.expect("connect");
    // Each round subscribes, syncs, and only then has another connection publish: the
    // message must be there, every time.
    for round in 0..50 {
        let subject = format!("bootfleet.v1.test.sync.{round}");
        let mut sub = listener
            .subscribe(subject.clone())
            .await
            .expect("subscribe");
        bootfleet_bus::sync(&listener, Duration::from_secs(10))
            .await
            .expect("sync");
        publisher
            .publish(subject, "here".into())
            .await
            .expect("publish");
        publisher.flush().await.expect("flush");
        let msg = tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .expect("delivered")
            .expect("subscription open");
        assert_eq!(&msg.payload[..], b"here", "round {round}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_in_a_queue_group_share_requests() {
    let nats = NatsServer::start();
    let bus = bus(&nats, 2000, 1).await;
    let a = start_test_service(bus.clone()).await;
    let b = start_test_service(bus.clone()).await;
    let trace = TraceParent::new_root();
    let mut seen = HashSet::new();
    for _ in 0..60 {
        let reply = bus
            .request_from::<_, proto::Script>(&trace, ECHO, &echo("x"))
            .await
            .expect("echo");
        seen.insert(reply.instance.expect("instance header"));
    }
    assert_eq!(
        seen,
        HashSet::from([a.instance.clone(), b.instance.clone()])
    );

    // After one stops, the other serves everything.
    a.stop().await;
    for _ in 0..10 {
        let reply = bus
            .request_from::<_, proto::Script>(&trace, ECHO, &echo("x"))
            .await
            .expect("echo");
        assert_eq!(reply.instance.as_deref(), Some(b.instance.as_str()));
    }
    b.stop().await;
}

// ---- TLS to nats-server, with certificates from a throwaway CA ----

mod tls {
    use std::time::Duration;

    use bootfleet_bus::{Bus, BusConfig, BusError, Tls, TraceParent};
    use bootfleet_testkit::test_pki::TestPki;
    use bootfleet_testkit::NatsServer;

    use super::{echo, start_test_service, ECHO};

    /// Only there so a hanging connect fails the test instead of stalling it.
    const WAIT: Duration = Duration::from_secs(20);

    /// A nats-server that speaks TLS only, with the test CA's server certificate; with
    /// `verify_clients`, it also demands a client certificate signed by that CA.
    fn tls_server(pki: &TestPki, verify_clients: bool) -> NatsServer {
        let mut conf = format!(
            "tls {{\n  cert_file: {:?}\n  key_file: {:?}\n",
            pki.server_cert, pki.server_key
        );
        if verify_clients {
            conf.push_str(&format!("  ca_file: {:?}\n  verify: true\n", pki.ca));
        }
        conf.push_str("}\n");
        NatsServer::start_with_config(&conf)
    }

    /// A connection to `nats` with `tls`, as its first answer (in time) says.
    async fn connect(nats: &NatsServer, tls: Option<Tls>) -> Result<Bus, BusError> {
        let mut config = BusConfig::new(nats.url(), "bus-tls-test");
        config.tls = tls;
        tokio::time::timeout(WAIT, Bus::connect(&config))
            .await
            .expect("connect answers in time")
    }

    /// TLS trusting only the CA in `ca`, without a client certificate.
    fn trusting(ca: &std::path::Path) -> Tls {
        Tls {
            ca_file: Some(ca.into()),
            ..Tls::default()
        }
    }

    async fn round_trip(bus: Bus) {
        let service = start_test_service(bus.clone()).await;
        let reply: bootfleet_api::proto::Script = bus
            .request(&TraceParent::new_root(), ECHO, &echo("over tls"))
            .await
            .expect("echo over tls");
        assert_eq!(reply.text, "over tls");
        service.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tls_needs_the_sites_ca_and_never_falls_back_to_plain_text() {
        let pki = TestPki::generate();
        let nats = tls_server(&pki, false);
        let with_ca = trusting(&pki.ca);
        let bus = connect(&nats, Some(with_ca.clone()))
            .await
            .expect("trusting the site's CA");
        round_trip(bus).await;

        // Without the CA the server's certificate is not trusted, although the server asks
        // for TLS and the client goes along.
        let err = connect(&nats, None).await.expect_err("an unknown CA");
        assert!(matches!(err, BusError::Connect { .. }), "{err}");
        // rustls: `invalid peer certificate: UnknownIssuer`.
        assert!(err.to_string().contains("certificate"), "{err}");

        // A client configured for TLS refuses a server that does not offer it.
        let plain = NatsServer::start();
        let err = connect(&plain, Some(with_ca))
            .await
            .expect_err("a plain-text server");
        assert!(matches!(err, BusError::Connect { .. }), "{err}");

        // A CA file that is not there is named, before any connection is tried.
        let missing = trusting(std::path::Path::new("/nonexistent/ca.pem"));
        let err = connect(&nats, Some(missing))
            .await
            .expect_err("no such file");
        assert!(
            err.to_string().contains("NATS_TLS_CA: /nonexistent/ca.pem"),
            "{err}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_server_that_verifies_clients_takes_only_a_certificate_of_its_ca() {
        let pki = TestPki::generate();
        let nats = tls_server(&pki, true);
        let ca_only = trusting(&pki.ca);
        let err = connect(&nats, Some(ca_only.clone()))
            .await
            .expect_err("no client certificate");
        // The server's alert: rustls says `BadCertificate`.
        assert!(
            err.to_string().to_lowercase().contains("certificate"),
            "{err}"
        );
        let with_cert = Tls {
            client_cert: Some(pki.client_cert.clone()),
            client_key: Some(pki.client_key.clone()),
            ..ca_only.clone()
        };
        let bus = connect(&nats, Some(with_cert))
            .await
            .expect("with the client certificate");
        round_trip(bus).await;

        let half = Tls {
            client_cert: Some(pki.client_cert.clone()),
            ..ca_only
        };
        let err = connect(&nats, Some(half))
            .await
            .expect_err("a certificate without its key");
        assert!(
            err.to_string()
                .contains("NATS_TLS_CERT and NATS_TLS_KEY go together"),
            "{err}"
        );
    }
}

/// A site's boot events reach a stream of that site (of one MAC, if asked), whatever another
/// connection publishes elsewhere; dropping the stream unsubscribes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boot_event_streams_follow_one_site_and_unsubscribe_when_dropped() {
    use bootfleet_api::subjects;
    use bootfleet_bus::BootEventItem;
    use prost::Message;

    let nats = NatsServer::start();
    let bus = bus(&nats, 2000, 1).await;
    let publisher = async_nats::connect(nats.url()).await.expect("connect");
    let publish = |site: &str, kind: &str, mac: &str| {
        let event = proto::BootEvent {
            artifact_id: "whatever the body says".into(),
            kind: kind.into(),
            mac: mac.into(),
            ..Default::default()
        };
        publisher.publish(subjects::boot_events(site), event.encode_to_vec().into())
    };
    let mut all = bus.boot_events("a", None, 16).await.expect("stream");
    let mut one = bus
        .boot_events("a", Some("52:54:00:12:34:56".into()), 16)
        .await
        .expect("stream");
    // Other sites' first, including one whose id starts like ours.
    for (site, kind, mac) in [
        ("b", "dhcp_answered", "52:54:00:12:34:56"),
        ("a.b", "dhcp_answered", "52:54:00:12:34:56"),
        ("a", "dhcp_answered", "52:54:00:00:00:01"),
        ("a", "tftp_served", "52:54:00:12:34:56"),
    ] {
        publish(site, kind, mac).await.expect("publish");
    }
    async fn next(stream: &mut bootfleet_bus::BootEvents) -> (String, String, String) {
        match tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("an event within 10 s")
        {
            Some(BootEventItem::Event(e)) => (e.artifact_id, e.kind, e.mac),
            other => panic!("expected an event, got {other:?}"),
        }
    }
    assert_eq!(
        next(&mut all).await,
        (
            "a".into(),
            "dhcp_answered".into(),
            "52:54:00:00:00:01".into()
        )
    );
    assert_eq!(
        next(&mut all).await,
        ("a".into(), "tftp_served".into(), "52:54:00:12:34:56".into())
    );
    assert_eq!(
        next(&mut one).await,
        ("a".into(), "tftp_served".into(), "52:54:00:12:34:56".into())
    );

    // While a stream is open, a request on the site's subject finds a subscriber (and times
    // out); once both are dropped, nobody is subscribed there.
    let probe = || {
        publisher.send_request(
            subjects::boot_events("a"),
            async_nats::Request::new().timeout(Some(Duration::from_millis(300))),
        )
    };
    let err = probe().await.expect_err("nobody answers");
    assert_eq!(err.kind(), async_nats::RequestErrorKind::TimedOut);
    drop(all);
    drop(one);
    let mut unsubscribed = false;
    for _ in 0..100 {
        let err = probe().await.expect_err("nobody answers");
        if err.kind() == async_nats::RequestErrorKind::NoResponders {
            unsubscribed = true;
            break;
        }
    }
    assert!(unsubscribed, "the dropped streams are still subscribed");
}
