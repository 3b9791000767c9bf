//! The `sms_text` target: `otp_sms_fuzz::sms_text::check`.
#![cfg_attr(fuzzing, no_main)]
#[cfg(fuzzing)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| otp_sms_fuzz::sms_text::check(data));
#[cfg(not(fuzzing))]
fn main() {
    otp_sms_fuzz::replay::main("sms_text")
}
