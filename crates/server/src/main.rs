//! `otp-sms-server`: see `otp-sms-server --help`.

fn main() -> std::process::ExitCode {
    otp_sms_server::cli_main()
}
