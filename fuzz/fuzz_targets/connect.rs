//! The `connect` target: `otp_sms_fuzz::wire::connect`.
#![cfg_attr(fuzzing, no_main)]
#[cfg(fuzzing)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| otp_sms_fuzz::wire::connect(data));
#[cfg(not(fuzzing))]
fn main() {
    otp_sms_fuzz::replay::main("connect")
}
