//! Compiles the contracts under `proto/` into Rust with a pure-Rust protobuf
//! compiler (protox), so a machine with nothing but cargo can build the mesh.
//! The descriptor set is written next to the generated code for gRPC reflection.

use prost::Message;
use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "proto/gradebook/registry/v1/registry.proto",
    "proto/gradebook/registry/v1/peer.proto",
    "proto/gradebook/log/v1/log.proto",
    "proto/gradebook/grading/v1/grading.proto",
    "proto/gradebook/supervisor/v1/supervisor.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(PROTOS, ["proto"])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("gradebook_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
