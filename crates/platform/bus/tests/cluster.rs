//! Streams and buckets on a real three-node NATS cluster (`NatsCluster`: three nats-server
//! processes with routes and JetStream on loopback): made with the configured replicas, raised
//! when an older one has fewer, and still whole after their leader is killed.

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use bootfleet_api::subjects;
use bootfleet_bus::{streams, ArtifactStore, Bus, BusConfig, ReplayStore};
use bootfleet_testkit::NatsCluster;

async fn bus(cluster: &NatsCluster, replicas: usize) -> Bus {
    let mut config = BusConfig::new(cluster.urls(), "bus-cluster-test");
    config.jetstream_replicas = replicas;
    Bus::connect(&config).await.expect("connect")
}

/// The stream's replicas as the cluster reports them: its configured count, and the leader
/// with the peers that are current.
async fn replicas(js: &jetstream::Context, name: &str) -> (usize, Option<String>, usize) {
    let mut stream = js.get_stream(name).await.expect("stream");
    let info = stream.info().await.expect("info");
    let cluster = info.cluster.clone().unwrap_or_default();
    let current = cluster.replicas.iter().filter(|r| r.current).count();
    (info.config.num_replicas, cluster.leader, current)
}

/// Polls the stream until it has three copies: a leader and two current peers (at most 20 s).
async fn three_copies(js: &jetstream::Context, name: &str) -> Option<String> {
    for _ in 0..200 {
        if let (3, Some(leader), 2) = replicas(js, name).await {
            return Some(leader);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_and_buckets_get_the_configured_replicas_and_outlive_their_leader() {
    let mut cluster = NatsCluster::start();
    let bus = bus(&cluster, 3).await;
    let js = jetstream::new(bus.client().clone());

    // The artifact bucket and the idempotency bucket, made by the bus with its replicas.
    let store = ArtifactStore::open_or_create(&bus)
        .await
        .expect("artifact bucket");
    ReplayStore::open(&bus).await.expect("idempotency bucket");
    for name in [
        format!("OBJ_{}", subjects::ARTIFACT_BUCKET),
        format!("KV_{}", subjects::IDEMPOTENCY_BUCKET),
    ] {
        let name = name.as_str();
        assert!(
            three_copies(&js, name).await.is_some(),
            "{name}: {:?}\n{}",
            replicas(&js, name).await,
            cluster.logs()
        );
    }

    // A stream an older version made with one replica is raised to three.
    let config = stream::Config {
        name: "CLUSTER_TEST".to_owned(),
        subjects: vec!["cluster.test.>".to_owned()],
        ..Default::default()
    };
    streams::ensure_stream(&js, config.clone(), 1)
        .await
        .expect("one replica");
    assert_eq!(replicas(&js, "CLUSTER_TEST").await.0, 1);
    streams::ensure_stream(&js, config.clone(), 3)
        .await
        .expect("raised");
    let leader = three_copies(&js, "CLUSTER_TEST")
        .await
        .expect("three copies after the raise");
    // More is kept: a process configured with fewer does not lower it.
    streams::ensure_stream(&js, config, 1).await.expect("kept");
    assert_eq!(replicas(&js, "CLUSTER_TEST").await.0, 3);

    // Messages and an object written (acknowledged) before the stream's leader is killed are
    // all there afterwards, read through another node.
    for i in 0..50 {
        js.publish(format!("cluster.test.{i}"), i.to_string().into())
            .await
            .expect("publish")
            .await
            .expect("acknowledged");
    }
    let bytes: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    store
        .put("k/file.bin", &mut bytes.as_slice())
        .await
        .expect("put");
    let killed = cluster.index_of(&leader).expect("leader is a node");
    cluster.kill(killed);
    let mut count = None;
    for _ in 0..100 {
        if let Ok(mut stream) = js.get_stream("CLUSTER_TEST").await {
            if let Ok(info) = stream.info().await {
                if info.cluster.as_ref().and_then(|c| c.leader.as_deref()) != Some(&leader) {
                    count = Some(info.state.messages);
                    break;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        count,
        Some(50),
        "after killing {leader}:\n{}",
        cluster.logs()
    );
    let read = store.info("k/file.bin").await.expect("object info");
    assert_eq!(read.size, 200_000);

    // The killed node comes back and catches up: three copies again.
    cluster.restart(killed);
    assert!(
        three_copies(&js, "CLUSTER_TEST").await.is_some(),
        "{:?}",
        replicas(&js, "CLUSTER_TEST").await
    );
}
