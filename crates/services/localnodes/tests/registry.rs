//! The localnodes registry on SQLite and on a real PostgreSQL, without the bus.

use bootfleet_api::{proto, ErrorCode};
use bootfleet_localnodes::{Localnodes, LocalnodesMigrator};
use bootfleet_testkit::{database_url, Backend};

async fn registry(backend: Backend, dir: &std::path::Path) -> Localnodes {
    // A database error's detail goes to the log only: show it with a failing test's output.
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let db = bootfleet_store::connect(&database_url(backend, dir))
        .await
        .expect("connect");
    bootfleet_store::migrate::<LocalnodesMigrator>(&db)
        .await
        .expect("migrate");
    Localnodes::new(db)
}

fn registration(ip: &str, site: &str) -> proto::RegisterLocalNode {
    proto::RegisterLocalNode {
        ip: ip.into(),
        artifact_id: site.into(),
        ..Default::default()
    }
}

async fn register_again_updates(backend: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = registry(backend, dir.path()).await;
    let first = r
        .register(proto::RegisterLocalNode {
            mac: "52-54-00-AA-BB-01".into(),
            hostname: "Node1".into(),
            pingable: true,
            ..registration("10.0.2.15", "site-1")
        })
        .await
        .expect("register");
    assert!(first.created);
    let node = first.node.expect("node");
    assert_eq!(node.mac, "52:54:00:aa:bb:01");
    assert_eq!(node.hostname, "node1");
    assert!(node.pingable);

    // Again, without mac/hostname: same row, details kept, pingable as now reported.
    let again = r
        .register(registration("10.0.2.15", "site-1"))
        .await
        .expect("register again");
    assert!(!again.created);
    let again = again.node.expect("node");
    assert_eq!(again.id, node.id);
    assert_eq!(again.mac, "52:54:00:aa:bb:01");
    assert!(!again.pingable);
    assert!(again.updated_at_ms >= node.updated_at_ms);

    // The same address at another site is another node.
    let other = r
        .register(registration("10.0.2.15", "site-2"))
        .await
        .expect("other site");
    assert!(other.created);

    let list = r
        .list(proto::ListRequest {
            search: "site-2".into(),
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(list.total, 1);
    assert_eq!(list.rows[0].artifact_id, "site-2");

    // A probe report from the site's distributor; one from another site touches nothing.
    for (site, reachable) in [("site-2", false), ("site-1", true)] {
        r.reachability(proto::ReachabilityReport {
            artifact_id: site.into(),
            nodes: vec![proto::NodeReachability {
                id: node.id.clone(),
                reachable,
            }],
        })
        .await
        .unwrap_or_else(|e| panic!("{site}'s report: {e:?}"));
    }
    let site = r
        .site_nodes(proto::SiteNodesRequest {
            artifact_id: "site-1".into(),
        })
        .await
        .expect("site nodes");
    assert_eq!(site.rows.len(), 1);
    let probed = r
        .get(proto::IdRequest {
            id: node.id.clone(),
        })
        .await
        .expect("get");
    assert!(probed.pingable);
    assert!(probed.last_seen_ms >= again.last_seen_ms);

    r.delete(proto::IdRequest {
        id: node.id.clone(),
    })
    .await
    .expect("delete");
    let gone = r
        .get(proto::IdRequest { id: node.id })
        .await
        .expect_err("deleted");
    assert_eq!(gone.code, ErrorCode::NotFound);
}

async fn bad_registrations(backend: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = registry(backend, dir.path()).await;
    let cases = [
        (registration("10.0.2.15;reboot", "site-1"), "ip"),
        (registration("$(id)", "site-1"), "ip"),
        (registration("", "site-1"), "ip"),
        (registration("10.0.2.15", "site 1"), "artifactId"),
        (registration("10.0.2.15", "`id`"), "artifactId"),
        (
            proto::RegisterLocalNode {
                mac: "zz:zz".into(),
                ..registration("10.0.2.15", "site-1")
            },
            "mac",
        ),
        (
            proto::RegisterLocalNode {
                hostname: "a;b".into(),
                ..registration("10.0.2.15", "site-1")
            },
            "hostname",
        ),
    ];
    for (req, field) in cases {
        let err = r.register(req.clone()).await.expect_err(&req.ip);
        assert_eq!(err.code, ErrorCode::InvalidArgument, "{req:?}");
        assert_eq!(err.field.as_deref(), Some(field), "{req:?}");
    }
    let list = r.list(proto::ListRequest::default()).await.expect("list");
    assert_eq!(list.total, 0, "nothing stored by refused registrations");
}

bootfleet_testkit::on_both_backends!(register_again_updates, bad_registrations);
