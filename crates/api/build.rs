//! Compiles `proto/` with protox, a pure-Rust protobuf compiler, so no `protoc` install is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read when the script runs, not when it is compiled: a build script compiled for another
    // checkout (a target directory copied from it) must still read this one's contract.
    let root = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let file = root.join("bootfleet/v1/bus.proto");
    println!("cargo:rerun-if-changed={}", root.display());
    let descriptors = protox::compile([&file], [&root])?;
    prost_build::Config::new()
        // Carries a BMC password: its Debug is written by hand in lib.rs, without it.
        .skip_debug([".bootfleet.v1.PowerRequest"])
        .compile_fds(descriptors)?;
    Ok(())
}
