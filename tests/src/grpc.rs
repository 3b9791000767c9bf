//! gRPC messages the end-to-end tests send, built once.

use otp_sms_grpc::proto::zitadel::resources::user::v3alpha::{
    set_phone, AddOtpsmsAuthenticatorRequest, ReturnPhoneVerificationCode, SetPhone,
};

/// An add of `number` for `user` that asks for the code in the answer.
pub fn add_returning_code(user: &str, number: &str) -> AddOtpsmsAuthenticatorRequest {
    AddOtpsmsAuthenticatorRequest {
        id: user.into(),
        phone: Some(SetPhone {
            number: number.into(),
            verification: Some(set_phone::Verification::ReturnCode(
                ReturnPhoneVerificationCode {},
            )),
        }),
        ..Default::default()
    }
}
