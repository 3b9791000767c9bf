//! The whole flow on the in-memory store: a host plugs in its user directory and authorizer,
//! adds a phone with `return_code`, verifies it, and shows the error a wrong code gets.
//!
//! Run it with `cargo run -p otp-sms-memory --example quickstart`.

use std::sync::Arc;

use async_trait::async_trait;
use otp_sms_core::{
    AbusePolicy, AddRequest, Authorizer, Caller, CodeKey, CodeKeyRing, CommandService, Event,
    InstanceId, KeyId, OrganizationId, PhoneVerification, PortError, PrincipalId, UserDirectory,
    UserId, UserRecord, VerifyRequest,
};
use otp_sms_memory::MemoryStore;

/// The host's users: here, one user `alice` of organization `acme`.
struct Users;

#[async_trait]
impl UserDirectory for Users {
    async fn find_user(
        &self,
        _instance: &InstanceId,
        user: &UserId,
    ) -> Result<Option<UserRecord>, PortError> {
        Ok((user.as_str() == "alice").then(|| {
            UserRecord::new(
                user.clone(),
                OrganizationId::parse("organization", "acme").expect("valid id"),
            )
        }))
    }

    async fn organization_by_domain(
        &self,
        _instance: &InstanceId,
        _domain: &str,
    ) -> Result<Option<OrganizationId>, PortError> {
        Ok(None)
    }
}

/// The host's permissions: nobody holds `user.write`, so users manage only themselves.
struct NoGrants;

#[async_trait]
impl Authorizer for NoGrants {
    async fn has_permission(
        &self,
        _instance: &InstanceId,
        _principal: &PrincipalId,
        _organization: &OrganizationId,
        _permission: &str,
    ) -> Result<bool, PortError> {
        Ok(false)
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // In production the 32-byte secret comes from the host's secret store, never from code.
    let keys = CodeKeyRing::new(CodeKey::new(KeyId::new("2026-11"), &[42; 32]));
    let store = Arc::new(MemoryStore::<Event>::new());
    // Users may not see their own code by default (it would prove nothing about the number);
    // this host delivers codes itself, so it allows it (docs/security.md).
    let policy = AbusePolicy {
        allow_self_return_code: true,
        ..AbusePolicy::default()
    };
    let service = CommandService::new(store.clone(), Arc::new(Users), Arc::new(NoGrants), keys)
        .with_abuse_policy(policy)?;
    let alice = Caller::new(
        InstanceId::parse("instance", "default")?,
        PrincipalId::parse("principal", "alice")?,
    );

    let added = service
        .add(
            &alice,
            AddRequest {
                user_id: "alice".into(),
                organization: None,
                phone: "+41 79 123 45 67".into(),
                verification: PhoneVerification::ReturnCode,
            },
        )
        .await?;
    let code = added
        .verification_code
        .expect("return_code returns the code");
    println!("added otp_sms_id={}", added.registration_id);
    println!("code (returned because of return_code): {}", code.expose());

    let wrong = service
        .verify(
            &alice,
            VerifyRequest {
                user_id: "alice".into(),
                organization: None,
                registration_id: added.registration_id.to_string(),
                code: "00000000".into(),
            },
        )
        .await
        .expect_err("a wrong code is refused");
    println!(
        "wrong code -> {} (HTTP {}): {wrong}",
        wrong.rpc_code().name(),
        wrong.http_status()
    );

    let details = service
        .verify(
            &alice,
            VerifyRequest {
                user_id: "alice".into(),
                organization: None,
                registration_id: added.registration_id.to_string(),
                code: code.expose().into(),
            },
        )
        .await?;
    println!(
        "verified: id={} created={} changed={} owner={:?}:{}",
        details.id,
        details.created.to_rfc3339(),
        details.changed.to_rfc3339(),
        details.owner.owner_type,
        details.owner.id
    );
    println!("events in the store: {}", store.len());
    Ok(())
}
