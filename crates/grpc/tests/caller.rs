//! Caller resolution on gRPC: a caller the host's middleware put in the request's extensions
//! stands in for the bearer token.

use std::sync::Arc;

use otp_sms_core::{Caller, CodeKey, CodeKeyRing, CommandService, Event, KeyId};
use otp_sms_grpc::proto::zitadel::resources::user::v3alpha::zitadel_users_server::ZitadelUsers;
use otp_sms_grpc::proto::zitadel::resources::user::v3alpha::{
    set_phone, AddOtpsmsAuthenticatorRequest, SetPhone,
};
use otp_sms_grpc::UsersService;
use otp_sms_memory::MemoryStore;
use otp_sms_testkit::doubles::{StaticAuthorizer, StaticTokens, StaticUsers};
use tonic::{Code, Request};

fn users_service() -> UsersService {
    let users = Arc::new(
        StaticUsers::new()
            .with_user("inst-1", "alice", "org-1")
            .with_user("inst-1", "bob", "org-1"),
    );
    let keys = CodeKeyRing::new(CodeKey::new(KeyId::new("k"), &[7; 32]));
    let service = CommandService::new(
        Arc::new(MemoryStore::<Event>::new()),
        users,
        Arc::new(StaticAuthorizer::new()),
        keys,
    );
    UsersService::new(service, Arc::new(StaticTokens::new()))
}

fn add(handed_over: Option<&str>) -> Request<AddOtpsmsAuthenticatorRequest> {
    let mut request = Request::new(AddOtpsmsAuthenticatorRequest {
        id: "alice".into(),
        phone: Some(SetPhone {
            number: "+41791234567".into(),
            verification: Some(set_phone::Verification::SendCode(Default::default())),
        }),
        ..Default::default()
    });
    if let Some(principal) = handed_over {
        request.extensions_mut().insert(Caller::new(
            "inst-1".parse().unwrap(),
            principal.parse().unwrap(),
        ));
    }
    request
}

#[tokio::test]
async fn a_caller_in_the_extensions_needs_no_bearer_token_and_is_checked_as_any() {
    let service = users_service();
    // Alice, handed over by the host, adds her own phone without any metadata.
    let added = service.add_otpsms_authenticator(add(Some("alice"))).await;
    assert!(added.is_ok(), "{added:?}");
    // Bob, handed over, may not act for alice.
    let refused = service.add_otpsms_authenticator(add(Some("bob"))).await;
    assert_eq!(refused.unwrap_err().code(), Code::PermissionDenied);
    // Nobody handed over and no token: UNAUTHENTICATED.
    let anonymous = service.add_otpsms_authenticator(add(None)).await;
    assert_eq!(anonymous.unwrap_err().code(), Code::Unauthenticated);
}
