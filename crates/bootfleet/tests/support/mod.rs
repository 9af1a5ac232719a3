//! The whole system in this process on SQLite, as the observability tests start it.

use bootfleet::{System, SystemConfig};
use bootfleet_bus::BusConfig;
use bootfleet_gateway::auth::{self, Role, Secret, Verifier};
use bootfleet_testkit::{database_url, Backend, NatsServer};

const SECRET: &[u8] = b"test-secret-0123456789abcdef-0123456789";

fn secret() -> Secret {
    Secret::new(SECRET.to_vec()).expect("test secret is long enough")
}

/// Every service and the gateway on `nats`, their database in `dir`.
pub async fn start_system(nats: &NatsServer, dir: &std::path::Path) -> System {
    System::start(SystemConfig {
        nats: BusConfig::new(nats.url(), "observability-test"),
        database_url: database_url(Backend::Sqlite, dir),
        listen: "127.0.0.1:0".parse().expect("addr"),
        gateway: bootfleet::gateway_config(Verifier::new(secret())),
    })
    .await
    .expect("start the system")
}

/// [`start_system`], serving gRPC too (on a free port: `System::grpc_url`).
pub async fn start_system_with_grpc(nats: &NatsServer, dir: &std::path::Path) -> System {
    let mut system = start_system(nats, dir).await;
    system
        .serve_grpc("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("serve grpc");
    system
}

/// A token of `role` for that gateway.
pub fn token(role: Role) -> String {
    auth::mint(&secret(), role, "test", 1).expect("mint")
}

/// `POST url` of `body` as `token`, which must answer 201 Created.
pub async fn post_created(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    body: serde_json::Value,
) -> reqwest::Response {
    let response = http
        .post(url)
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 201);
    response
}
