//! Compiles the admin API's protobuf definitions. `protoc` comes from the
//! protoc-bin-vendored crate, so no system install is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);

    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        // The descriptor set feeds gRPC reflection on the admin port.
        .file_descriptor_set_path(out_dir.join("admin_descriptor.bin"))
        .compile_with_config(config, &["proto/usage_authz/admin/v1/admin.proto"], &["proto"])?;
    Ok(())
}
