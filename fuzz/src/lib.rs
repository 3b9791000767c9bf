//! Coverage-guided fuzz targets for otp-sms, and the replay of their seeds and of every crash
//! they found in the ordinary test suite.
//!
//! Each target is a function of the fuzzer's bytes that panics when a property breaks; the
//! binaries in `fuzz_targets/` hand them to libFuzzer when cargo-fuzz builds them (it sets
//! `--cfg fuzzing`), and otherwise run them over the files they are given. How to run them,
//! and the long run's figures: docs/testing.md, "Fuzzing".
//!
//! | target | what it reads |
//! |---|---|
//! | `phone` | any text, through [`otp_sms_core::Phone::parse`] against phonenumber |
//! | `json_api`, `connect`, `grpc_web`, `grpc` | a request's text ([`request`]) on every route |
//! | `reports` | a provider's delivery report, signed by the target when it asks |
//! | `headers` | Authorization, X-Forwarded-For, Forwarded, Idempotency-Key values |
//! | `stored_events`, `outbox` | event rows and outbox messages as the stores read them |
//! | `sms_text` | `[sms.text]`, a code and a locale, rendered and counted in segments |
//! | `config` | any text as the server's configuration |

pub mod answer;
pub mod config;
pub mod fixture;
pub mod headers;
pub mod phone;
pub mod replay;
pub mod request;
pub mod sms_text;
pub mod stored;
pub mod wire;

/// A target: the fuzzer's bytes in, a panic when a property breaks.
pub type Target = fn(&[u8]);

/// Every target by its name (the binary's, and its folders' under `fuzz/seeds` and
/// `fuzz/regressions`).
pub const TARGETS: &[(&str, Target)] = &[
    ("phone", phone::check),
    ("json_api", wire::json_api),
    ("connect", wire::connect),
    ("grpc_web", wire::grpc_web),
    ("grpc", wire::grpc),
    ("reports", wire::reports),
    ("headers", headers::check),
    ("stored_events", stored::events),
    ("outbox", stored::outbox),
    ("sms_text", sms_text::check),
    ("config", config::check),
];
