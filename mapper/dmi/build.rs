//! Generates the DMI v1beta1 messages, clients and servers from
//! `proto/dmi_v1beta1.proto` with `protox` (a pure-Rust protobuf compiler, so
//! no `protoc` is needed) and `tonic-prost-build`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/dmi_v1beta1.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
