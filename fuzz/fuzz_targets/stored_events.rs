//! The `stored_events` target: `otp_sms_fuzz::stored::events`.
#![cfg_attr(fuzzing, no_main)]
#[cfg(fuzzing)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| otp_sms_fuzz::stored::events(data));
#[cfg(not(fuzzing))]
fn main() {
    otp_sms_fuzz::replay::main("stored_events")
}
