//! `otp-sms-server`: see `otp-sms-server --help`.

/// jemalloc unless built with `--no-default-features` (see `Cargo.toml`).
#[cfg(all(feature = "jemalloc", not(target_env = "msvc")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    otp_sms_server::cli_main()
}
