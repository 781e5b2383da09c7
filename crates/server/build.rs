//! Generates the gRPC code for `../../proto/btlog/v1/log.proto` with a vendored `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // Build scripts are single-threaded, so setting the variable here is sound.
    std::env::set_var("PROTOC", protoc);
    println!("cargo:rerun-if-changed=../../proto/btlog/v1/log.proto");
    // A request that does not decode is bad input, not a server failure (src/api/codec.rs).
    tonic_prost_build::configure()
        .codec_path("crate::api::codec::ProstCodec")
        .compile_protos(&["../../proto/btlog/v1/log.proto"], &["../../proto"])?;
    Ok(())
}
