//! Compiles the gRPC API (`proto/bootfleet/v1/api.proto`) with protox, like the api crate's bus
//! messages: no `protoc`. The rows it shares with the bus (`bootfleet.v1.*`) are the api crate's
//! types (prost-build writes `bootfleet.v1.rs` too, which is never included); the whole descriptor
//! set is kept for gRPC reflection.

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read when the script runs, not when it is compiled: a build script compiled for another
    // checkout (a target directory copied from it) must still read this one's contract.
    let root = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let api = "bootfleet/v1/api.proto";
    println!("cargo:rerun-if-changed={}", root.display());
    let descriptors = protox::compile([root.join(api)], [&root])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("api_descriptor.bin"), descriptors.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .extern_path(".bootfleet.v1", "::bootfleet_api::proto")
        .compile_fds(descriptors)?;
    Ok(())
}
