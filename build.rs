//! Compiles `proto/` for Tracker's gRPC service (server feature only) with protox, a
//! pure-Rust protobuf compiler, so no system `protoc` is needed. Writes the generated
//! messages, server and transport-less client, and the file descriptor set that gRPC
//! reflection serves, to `OUT_DIR` (see `compat::tracker::grpc`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=proto");
    #[cfg(feature = "server")]
    {
        use prost::Message;
        const PROTO: &str = "proto/tracker/lock/v1alpha1/lock.proto";
        let fds = protox::compile([PROTO], ["proto"])?;
        let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
        std::fs::write(out.join("tracker_descriptor.bin"), fds.encode_to_vec())?;
        // No transport in the generated client: the library needs no gRPC client
        // stack, and a test hands the client a tonic channel of its own.
        tonic_prost_build::configure()
            .build_client(true)
            .build_transport(false)
            .compile_fds(fds)?;
    }
    Ok(())
}
