//! Compiles the `.proto` files in Rust (protox), so the build needs no system `protoc`, and
//! generates the tonic server and client. The encoded descriptor set is kept for reflection
//! and for strict proto3 JSON checks.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let mut compiler = protox::Compiler::new(["proto"])?;
    compiler.include_imports(true).open_files([
        "zitadel/resources/user/v3alpha/user_service.proto",
        "otpsms/v1/extensions.proto",
        "otpsms/v1/sign_in.proto",
        "zitadel/message.proto",
    ])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    // Encoded by protox itself, so that the options' extensions (google.api.http,
    // validate.rules, …) survive for reflection; prost's types would drop them.
    std::fs::write(
        out.join("descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;
    let fds = compiler.file_descriptor_set();
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // prost's codec, but a request that does not decode is INVALID_ARGUMENT, not INTERNAL.
        .codec_path("crate::codec::Codec")
        // These carry codes or numbers; their Debug is written by hand, redacted.
        .skip_debug([
            "zitadel.resources.user.v3alpha.SetPhone",
            "zitadel.resources.user.v3alpha.VerifyOTPSMSRegistrationRequest",
            "zitadel.resources.user.v3alpha.AddOTPSMSAuthenticatorResponse",
            "otpsms.v1.OTPSMS",
            "otpsms.v1.Challenges",
            "otpsms.v1.CheckOTP",
            "otpsms.v1.RequestOTPSMSChallengeRequest",
            "otpsms.v1.CheckOTPSMSChallengeRequest",
        ])
        .compile_fds(fds)?;
    Ok(())
}
