//! The `json_api` target: `otp_sms_fuzz::wire::json_api`.
#![cfg_attr(fuzzing, no_main)]
#[cfg(fuzzing)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| otp_sms_fuzz::wire::json_api(data));
#[cfg(not(fuzzing))]
fn main() {
    otp_sms_fuzz::replay::main("json_api")
}
