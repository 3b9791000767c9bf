//! The services' protobuf codec: prost's (tonic_prost's encoder), except for what a message
//! that does not decode means.
//!
//! tonic's prost codec answers every message that does not decode with INTERNAL, a server
//! fault. A request the server cannot decode is the caller's error: this codec answers it
//! INVALID_ARGUMENT, as the JSON API (400) and Connect (`invalid_argument`) answer a malformed
//! body, so that a hostile or broken client never shows as a server fault in the metrics and
//! alerts that count them. A response the generated client cannot decode stays INTERNAL (the
//! server's fault, as gRPC has it).

use std::marker::PhantomData;

use prost::Message;
use tonic::codec::{DecodeBuf, Decoder};
use tonic::{Code, Status};

use crate::proto::otpsms::v1 as ext;
use crate::proto::zitadel::resources::user::v3alpha as user;

/// Which side of a call a message type travels: what its failed decoding means.
pub trait Direction {
    /// The status code of a message of this type that does not decode.
    const WHEN_MALFORMED: Code;
}

macro_rules! directions {
    ($code:expr => $($message:ty),+ $(,)?) => {
        $(impl Direction for $message {
            const WHEN_MALFORMED: Code = $code;
        })+
    };
}

// A type missing here fails to compile where its service is generated: a new call must say
// which side its messages travel.
directions!(Code::InvalidArgument =>
    user::AddOtpsmsAuthenticatorRequest,
    user::VerifyOtpsmsRegistrationRequest,
    user::RemoveOtpsmsAuthenticatorRequest,
    ext::UnlockOtpsmsVerificationRequest,
    ext::ListOtpsmsAuthenticatorsRequest,
    ext::RequestOtpsmsChallengeRequest,
    ext::CheckOtpsmsChallengeRequest,
);
directions!(Code::Internal =>
    user::AddOtpsmsAuthenticatorResponse,
    user::VerifyOtpsmsRegistrationResponse,
    user::RemoveOtpsmsAuthenticatorResponse,
    ext::UnlockOtpsmsVerificationResponse,
    ext::ListOtpsmsAuthenticatorsResponse,
    ext::RequestOtpsmsChallengeResponse,
    ext::CheckOtpsmsChallengeResponse,
);

/// The codec of the generated services and clients (`tonic_prost_build`'s `codec_path`).
#[derive(Debug, Clone)]
pub struct Codec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for Codec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> tonic::codec::Codec for Codec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Direction + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = tonic_prost::ProstEncoder<T>;
    type Decoder = MessageDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        tonic_prost::ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        MessageDecoder(PhantomData)
    }
}

/// Decodes with prost; a message that does not decode is its [`Direction`]'s code.
#[derive(Debug, Clone)]
pub struct MessageDecoder<U>(PhantomData<U>);

impl<U: Message + Default + Direction> Decoder for MessageDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        decode(buf).map(Some)
    }
}

/// One message of type `U` from `buf`, or its [`Direction`]'s status.
fn decode<U: Message + Default + Direction>(buf: impl prost::bytes::Buf) -> Result<U, Status> {
    U::decode(buf).map_err(|e| {
        Status::new(
            U::WHEN_MALFORMED,
            format!("the message is not a valid protobuf message of its type: {e}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Field 0 is no field: prost refuses it. A request is the caller's error, a response the
    /// server's.
    #[test]
    fn a_request_that_does_not_decode_is_invalid_argument_and_a_response_internal() {
        let garbage: &[u8] = &[0x00, 0x01];
        let request = decode::<user::VerifyOtpsmsRegistrationRequest>(garbage).unwrap_err();
        assert_eq!(request.code(), Code::InvalidArgument, "{request:?}");
        let response = decode::<user::VerifyOtpsmsRegistrationResponse>(garbage).unwrap_err();
        assert_eq!(response.code(), Code::Internal, "{response:?}");
    }

    #[test]
    fn a_well_formed_message_decodes() {
        let sent = user::VerifyOtpsmsRegistrationRequest {
            id: "alice".into(),
            code: "123456".into(),
            ..Default::default()
        };
        let got = decode::<user::VerifyOtpsmsRegistrationRequest>(&sent.encode_to_vec()[..]);
        assert_eq!(got.unwrap(), sent);
    }
}
