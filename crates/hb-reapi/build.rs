//! Compiles the vendored REAPI, ByteStream, long-running-operation and Remote Workers
//! (Bots) protos into Rust (clients only) with protox, a protobuf compiler written in Rust: no `protoc` needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/build/bazel/remote/execution/v2/remote_execution.proto",
        "proto/google/bytestream/bytestream.proto",
        "proto/google/devtools/remoteworkers/v1test2/bots.proto",
    ];
    for p in &protos {
        println!("cargo:rerun-if-changed={p}");
    }
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure().build_server(false).build_client(true).compile_fds(fds)?;
    Ok(())
}
