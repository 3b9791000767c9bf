//! The wire format, pinned byte by byte, and the one error mapping.

use otp_sms_core::{Error, Precondition};
use otp_sms_grpc::proto::zitadel::object::v3alpha::{
    instance, organization, Instance, Organization,
};
use otp_sms_grpc::proto::zitadel::resources::user::v3alpha::VerifyOtpsmsRegistrationRequest;
use prost::Message;

#[test]
fn verify_request_encodes_to_the_bytes_the_field_numbers_imply() {
    let request = VerifyOtpsmsRegistrationRequest {
        instance: Some(Instance {
            property: Some(instance::Property::Id("i1".into())),
        }),
        organization: Some(Organization {
            property: Some(organization::Property::OrgDomain("o.example".into())),
        }),
        id: "u1".into(),
        otp_sms_id: "r1".into(),
        code: "12345678".into(),
    };
    let expected: Vec<u8> = [
        // instance = 1 (LEN): Instance { id = 1: "i1" }
        &[0x0a, 0x04, 0x0a, 0x02][..],
        b"i1",
        // organization = 2 (LEN): Organization { org_domain = 2: "o.example" }
        &[0x12, 0x0b, 0x12, 0x09],
        b"o.example",
        // id = 3 (LEN): "u1"
        &[0x1a, 0x02],
        b"u1",
        // otp_sms_id = 4 (LEN): "r1"
        &[0x22, 0x02],
        b"r1",
        // code = 5 (LEN): "12345678"
        &[0x2a, 0x08],
        b"12345678",
    ]
    .concat();
    assert_eq!(request.encode_to_vec(), expected);
    assert_eq!(
        VerifyOtpsmsRegistrationRequest::decode(expected.as_slice()).unwrap(),
        request
    );
}

#[test]
fn every_error_maps_to_its_grpc_code() {
    let cases = [
        (
            Error::invalid("code", "empty"),
            tonic::Code::InvalidArgument,
        ),
        (Error::WrongCode, tonic::Code::InvalidArgument),
        (Error::UserNotFound, tonic::Code::NotFound),
        (Error::InstanceNotFound, tonic::Code::NotFound),
        (Error::RegistrationNotFound, tonic::Code::NotFound),
        (Error::UnknownCall("x".into()), tonic::Code::NotFound),
        (Error::PermissionDenied, tonic::Code::PermissionDenied),
        (
            Error::FailedPrecondition(Precondition::CodeExpired),
            tonic::Code::FailedPrecondition,
        ),
        (
            Error::RateLimited {
                retry_after: std::time::Duration::from_secs(5),
            },
            tonic::Code::ResourceExhausted,
        ),
        (Error::Aborted, tonic::Code::Aborted),
        (Error::Unauthenticated, tonic::Code::Unauthenticated),
        (
            Error::Unavailable("db at 10.0.0.1".into()),
            tonic::Code::Unavailable,
        ),
        (
            Error::Internal("secret detail".into()),
            tonic::Code::Internal,
        ),
    ];
    for (error, code) in cases {
        let status = otp_sms_grpc::status(&error);
        assert_eq!(status.code(), code, "{error:?}");
        assert_eq!(status.code() as i32, error.rpc_code().as_i32());
        assert!(!status.message().contains("10.0.0.1"));
        assert!(!status.message().contains("secret detail"));
    }
}
