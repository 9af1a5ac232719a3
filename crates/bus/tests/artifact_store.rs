//! The artifact bucket against a real `nats-server` with JetStream.

use bootfleet_api::{ApiError, ErrorCode};
use bootfleet_bus::{ArtifactStore, ArtifactStoreError, Bus, BusConfig};
use bootfleet_testkit::NatsServer;
use futures_util::StreamExt;

/// Three chunks of the object store's 128 KiB, the last one short.
fn content() -> Vec<u8> {
    (0..300_000u32)
        .map(|i| ((i * 7 + i / 1000) % 251) as u8)
        .collect()
}

/// `sha256sum` of [`content`].
const CONTENT_SHA256: &str = "37847e6a9ebaa35ed4651d3863601772ea3f0a01250e1363e26fea1c32dd7688";

async fn collect(store: &ArtifactStore, name: &str, range: std::ops::Range<u64>) -> Vec<u8> {
    let mut chunks = store.chunks(name, range.clone()).await.expect("chunks");
    let mut bytes = Vec::new();
    while let Some(chunk) = chunks.next().await {
        bytes.extend_from_slice(&chunk.unwrap_or_else(|e| panic!("{range:?}: {e}")));
    }
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_read_ranges_and_delete() {
    let nats = NatsServer::start();
    let bus = Bus::connect(&BusConfig::new(nats.url(), "artifact-store-test"))
        .await
        .expect("connect");
    let not_yet = ArtifactStore::open(&bus)
        .await
        .expect_err("no bucket before the artifacts service makes it");
    assert!(
        matches!(not_yet, ArtifactStoreError::Unreachable(_)),
        "{not_yet:?}"
    );
    let store = ArtifactStore::open_or_create(&bus).await.expect("create");
    // A reader opens the bucket that is there now.
    let reader = ArtifactStore::open(&bus).await.expect("open");

    let bytes = content();
    let stored = store
        .put("k1/ipxe.efi", &mut bytes.as_slice())
        .await
        .expect("put");
    assert_eq!(stored.size, 300_000);
    assert_eq!(stored.sha256, CONTENT_SHA256);
    assert_eq!(reader.info("k1/ipxe.efi").await.expect("info"), stored);

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("small.cfg");
    std::fs::write(&path, b"abc").expect("write");
    let small = store.put_file("k1/small.cfg", &path).await.expect("put");
    assert_eq!(
        small.sha256,
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert_eq!(reader.read("k1/small.cfg", 3).await.expect("read"), b"abc");

    // Whole, bounded.
    assert_eq!(
        reader.read("k1/ipxe.efi", 300_000).await.expect("read"),
        bytes
    );
    let too_large = reader
        .read("k1/ipxe.efi", 299_999)
        .await
        .expect_err("over the limit");
    assert!(
        matches!(
            too_large,
            ArtifactStoreError::TooLarge {
                size: 300_000,
                limit: 299_999,
                ..
            }
        ),
        "{too_large:?}"
    );

    // Ranges: at the start, across a chunk boundary, inside the last chunk, at the end, and
    // past it (cut to the end; nothing from the end on).
    for (start, end) in [
        (0, 10),
        (0, 300_000),
        (131_000, 131_200),
        (131_072, 262_144),
        (131_071, 262_145),
        (270_000, 270_001),
        (299_990, 300_000),
    ] {
        let got = collect(&reader, "k1/ipxe.efi", start..end).await;
        assert!(
            got == bytes[start as usize..end as usize],
            "range {start}..{end}"
        );
    }
    assert_eq!(
        collect(&reader, "k1/ipxe.efi", 299_995..400_000).await,
        bytes[299_995..]
    );
    assert!(collect(&reader, "k1/ipxe.efi", 300_000..300_010)
        .await
        .is_empty());
    assert!(collect(&reader, "k1/ipxe.efi", 500_000..600_000)
        .await
        .is_empty());
    // The stream comes a chunk at a time.
    let pieces: Vec<usize> = store
        .chunks("k1/ipxe.efi", 0..300_000)
        .await
        .expect("chunks")
        .map(|c| c.expect("chunk").len())
        .collect()
        .await;
    assert_eq!(pieces, [131_072, 131_072, 37_856]);

    // Replaced under the same name: the new bytes only.
    let replaced = store
        .put("k1/small.cfg", &mut b"abcd".as_slice())
        .await
        .expect("put again");
    assert_eq!(replaced.size, 4);
    assert_eq!(
        reader.read("k1/small.cfg", 10).await.expect("read"),
        b"abcd"
    );

    // Deleted, or never there: not found, and unavailable for the API (a row names it).
    store.delete("k1/ipxe.efi").await.expect("delete");
    for name in ["k1/ipxe.efi", "k2/never.efi"] {
        let missing = reader.info(name).await.expect_err("info");
        assert!(
            matches!(&missing, ArtifactStoreError::NotFound(n) if n == name),
            "{missing:?}"
        );
        let missing = reader.read(name, 1 << 20).await.expect_err("read");
        assert!(
            matches!(missing, ArtifactStoreError::NotFound(_)),
            "{missing:?}"
        );
        let missing = reader.chunks(name, 0..10).await.err().expect("chunks");
        let api = ApiError::from(missing);
        assert_eq!(api.code, ErrorCode::Unavailable, "{api:?}");
        assert!(api.message.contains(name), "{api:?}");
    }
    let never = store.delete("k2/never.efi").await.expect_err("delete");
    assert!(
        matches!(never, ArtifactStoreError::NotFound(_)),
        "{never:?}"
    );
    assert_eq!(
        reader.read("k1/small.cfg", 10).await.expect("read"),
        b"abcd"
    );
}
