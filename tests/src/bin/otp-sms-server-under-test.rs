//! The `otp-sms-server` binary, under another name: `main` is the server crate's `cli_main`.

fn main() -> std::process::ExitCode {
    otp_sms_server::cli_main()
}
