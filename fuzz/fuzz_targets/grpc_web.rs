//! The `grpc_web` target: `otp_sms_fuzz::wire::grpc_web`.
#![cfg_attr(fuzzing, no_main)]
#[cfg(fuzzing)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| otp_sms_fuzz::wire::grpc_web(data));
#[cfg(not(fuzzing))]
fn main() {
    otp_sms_fuzz::replay::main("grpc_web")
}
