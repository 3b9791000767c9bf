//! The `phone` target: `otp_sms_fuzz::phone::check`.
#![cfg_attr(fuzzing, no_main)]
#[cfg(fuzzing)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| otp_sms_fuzz::phone::check(data));
#[cfg(not(fuzzing))]
fn main() {
    otp_sms_fuzz::replay::main("phone")
}
