//! The server's configuration: any text through what the server reads at start-up (the TOML,
//! then the directory, the code policy, the SMS text, the abuse rules, the database time-outs,
//! the listener's limits and the notifier's settings). Each step answers a value or an error
//! that says what is wrong; none panics.

use otp_sms_server::config::Config;

/// The target.
pub fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let config = match Config::from_toml(text) {
        Ok(config) => config,
        Err(e) => return names_what_is_wrong(&e.to_string()),
    };
    if let Err(e) = config.directory() {
        names_what_is_wrong(&e.to_string());
    }
    match config.policy.policy() {
        Ok(policy) => {
            if let Err(e) = config
                .sms
                .text
                .templates(policy.length(), policy.lifetime())
            {
                names_what_is_wrong(&e);
            }
        }
        Err(e) => names_what_is_wrong(&e.to_string()),
    }
    if let Err(e) = config.abuse_policies() {
        names_what_is_wrong(&e.to_string());
    }
    if let Err(e) = config.database.timeouts() {
        names_what_is_wrong(&e);
    }
    let _ = config.server.limits();
    let _ = (
        config.notifier.settings(),
        config.notifier.delivery_policy(),
    );
}

/// An error names what is wrong: a message, not an empty string.
fn names_what_is_wrong(message: &str) {
    assert!(
        message
            .trim_start_matches("invalid configuration: ")
            .trim()
            .len()
            > 3,
        "an error that says nothing: {message:?}"
    );
}
