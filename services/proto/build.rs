//! Compiles `proto/*.proto` with a vendored `protoc`, so a fresh machine needs no system
//! protobuf compiler.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY of intent: build scripts are single-threaded; prost-build reads PROTOC.
    // `set_var` is unsafe in edition 2024 only because of other threads, of which there are none.
    #[allow(unsafe_code)]
    unsafe {
        std::env::set_var("PROTOC", protoc);
    }
    let protos = [
        "proto/kv/v1/kv.proto",
        "proto/raft/v1/raft.proto",
        "proto/raftkv/v1/raftkv.proto",
        "proto/log/v1/controller.proto",
        "proto/log/v1/broker.proto",
        "proto/log/v1/group.proto",
        "proto/cache/v1/cache.proto",
        "proto/batch/v1/batch.proto",
        "proto/bank/v1/bank.proto",
        "proto/etcd/kv.proto",
    ];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    tonic_prost_build::configure()
        .bytes(".")
        .compile_protos(&protos, &["proto"])?;
    Ok(())
}
