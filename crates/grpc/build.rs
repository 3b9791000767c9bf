//! Compiles the `.proto` files in Rust (protox), so the build needs no system `protoc`, and
//! generates the tonic server and client. The encoded descriptor set is kept for reflection
//! and for strict proto3 JSON checks.

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(
        [
            "zitadel/resources/user/v3alpha/user_service.proto",
            "otpsms/v1/extensions.proto",
            "zitadel/message.proto",
        ],
        ["proto"],
    )?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // These carry codes or numbers; their Debug is written by hand, redacted.
        .skip_debug([
            "zitadel.resources.user.v3alpha.SetPhone",
            "zitadel.resources.user.v3alpha.VerifyOTPSMSRegistrationRequest",
            "zitadel.resources.user.v3alpha.AddOTPSMSAuthenticatorResponse",
        ])
        .compile_fds(fds)?;
    Ok(())
}
