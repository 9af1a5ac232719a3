//! The text registry on SQLite and on a real PostgreSQL, without the bus.

use bootfleet_api::subjects::ScriptKind;
use bootfleet_api::{proto, ErrorCode};
use bootfleet_scripts::{KickstartsMigrator, MainscriptsMigrator, TextRegistry};
use bootfleet_testkit::{database_url, Backend};

async fn registry(backend: Backend, dir: &std::path::Path, kind: ScriptKind) -> TextRegistry {
    let db = bootfleet_store::connect(&database_url(backend, dir))
        .await
        .expect("connect");
    bootfleet_store::migrate::<MainscriptsMigrator>(&db)
        .await
        .expect("migrate");
    bootfleet_store::migrate::<KickstartsMigrator>(&db)
        .await
        .expect("migrate");
    // Migrations are idempotent: a restarted service runs them again.
    bootfleet_store::migrate::<MainscriptsMigrator>(&db)
        .await
        .expect("migrate again");
    TextRegistry::new(kind, db)
}

async fn create_is_idempotent_per_id(backend: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = registry(backend, dir.path(), ScriptKind::Kickstarts).await;
    let id = "6a3c2f0e-0d2f-4c7e-9f3e-1a2b3c4d5e6f".to_owned();
    let req = proto::CreateScript {
        id: id.clone(),
        text: "lang en_US".into(),
        sites: Vec::new(),
    };
    let first = r.create(req.clone()).await.expect("create");
    // A retried create (the bus resends when a reply was lost) returns the same row.
    let again = r.create(req).await.expect("retry");
    assert_eq!(first, again);
    let other = r
        .create(proto::CreateScript {
            id: id.clone(),
            text: "something else".into(),
            sites: Vec::new(),
        })
        .await
        .expect_err("same id, other text");
    assert_eq!(other.code, ErrorCode::Conflict);
    let list = r.list(proto::ListRequest::default()).await.expect("list");
    assert_eq!(list.total, 1);
    assert_eq!(list.rows[0].text, "lang en_US");

    // Malformed ids never reach SQL.
    for bad in ["", "1 OR 1=1", "'; DROP TABLE kickstarts; --"] {
        let err = r
            .get(proto::IdRequest { id: bad.into() })
            .await
            .expect_err(bad);
        assert_eq!(err.code, ErrorCode::InvalidArgument);
    }
    let err = r
        .update(proto::UpdateScript {
            id: id.clone(),
            text: String::new(),
            ..Default::default()
        })
        .await
        .expect_err("empty");
    assert_eq!(err.field.as_deref(), Some("text"));
    let row = r.get(proto::IdRequest { id }).await.expect("still there");
    assert_eq!(row.text, "lang en_US");
}

async fn sites_are_checked_stored_and_kept_unless_replaced(backend: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = registry(backend, dir.path(), ScriptKind::Mainscripts).await;
    let id = "0b6f2d4e-8c1a-4e3b-9a57-2f1e0d9c8b7a".to_owned();
    for (sites, field) in [
        (vec!["site a".to_owned()], "sites[0]"),
        (vec!["a".into(), "b".into(), "a".into()], "sites[2]"),
        ((0..65).map(|i| format!("s{i}")).collect(), "sites"),
    ] {
        let err = r
            .create(proto::CreateScript {
                id: id.clone(),
                text: "#!ipxe".into(),
                sites,
            })
            .await
            .expect_err(field);
        assert_eq!(err.field.as_deref(), Some(field), "{err:?}");
    }
    assert!(r.get(proto::IdRequest { id: id.clone() }).await.is_err());

    let created = r
        .create(proto::CreateScript {
            id: id.clone(),
            text: "#!ipxe".into(),
            sites: vec!["rack-1".into(), "rack-2".into()],
        })
        .await
        .expect("create");
    assert_eq!(created.sites, ["rack-1", "rack-2"]);
    // An update that does not replace them keeps them.
    let kept = r
        .update(proto::UpdateScript {
            id: id.clone(),
            text: "#!ipxe\nshell".into(),
            ..Default::default()
        })
        .await
        .expect("update text");
    assert_eq!(
        (kept.text.as_str(), kept.sites.as_slice()),
        ("#!ipxe\nshell", &created.sites[..])
    );
    let every = r
        .update(proto::UpdateScript {
            id: id.clone(),
            text: "#!ipxe".into(),
            sites: Vec::new(),
            replace_sites: true,
        })
        .await
        .expect("every site again");
    assert!(every.sites.is_empty());
    let listed = r.list(proto::ListRequest::default()).await.expect("list");
    assert_eq!(listed.rows, [every]);
}

bootfleet_testkit::on_both_backends!(
    create_is_idempotent_per_id,
    sites_are_checked_stored_and_kept_unless_replaced
);
