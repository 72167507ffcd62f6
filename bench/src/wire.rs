//! Check requests shaped like the ones Envoy 1.40 sends for a plain GET, and a
//! tonic codec that sends them pre-encoded, so the load generator spends its
//! CPU on the wire and not on protobuf encoding.

use std::collections::HashMap;

use bytes::{BufMut, Bytes};
use envoy_types::ext_authz::v3::pb::{CheckRequest, CheckResponse};
use envoy_types::pb::envoy::config::core::v3::{Address, SocketAddress, address, socket_address};
use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer, Request};
use envoy_types::pb::google::protobuf::Timestamp;
use prost::Message;
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

/// gRPC path of `envoy.service.auth.v3.Authorization/Check`.
pub const CHECK_PATH: &str = "/envoy.service.auth.v3.Authorization/Check";

/// Workspace slug the stand-in usage-check API and the no-op authorizer
/// return.
pub const BENCH_WORKSPACE: &str = "bench";

fn socket(ip: &str, port: u32) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: ip.to_string(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
            ..Default::default()
        })),
    }
}

/// Builds the check Envoy would send for `GET {target}` from a curl-like
/// client: peers, timestamp, request id and the usual headers.
pub fn check_request(target: &str) -> CheckRequest {
    let headers: HashMap<String, String> = [
        (":authority", "127.0.0.1:19110"),
        (":method", "GET"),
        (":path", target),
        (":scheme", "http"),
        ("accept", "*/*"),
        ("user-agent", "usage-authz-bench/0.1"),
        ("x-forwarded-proto", "http"),
        ("x-request-id", "3f2c0a4e-8a1b-4e0c-9d55-6a3e2b1f7c90"),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_string(), value.to_string()))
    .collect();

    CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(Peer {
                address: Some(socket("127.0.0.1", 52_000)),
                ..Default::default()
            }),
            destination: Some(Peer {
                address: Some(socket("127.0.0.1", 19_110)),
                ..Default::default()
            }),
            request: Some(Request {
                time: Some(Timestamp {
                    seconds: 1_760_000_000,
                    nanos: 0,
                }),
                http: Some(HttpRequest {
                    id: "4830012345678901234".to_string(),
                    method: "GET".to_string(),
                    headers,
                    path: target.to_string(),
                    host: "127.0.0.1:19110".to_string(),
                    scheme: "http".to_string(),
                    protocol: "HTTP/1.1".to_string(),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        }),
    }
}

/// Encodes the check for `GET {target}` once, for reuse on every call.
pub fn encoded_check(target: &str) -> Bytes {
    Bytes::from(check_request(target).encode_to_vec())
}

/// Target of an authenticated request carrying `key` in the query.
pub fn keyed_target(key: &str) -> String {
    format!("/infer?api_key={key}")
}

/// Sends pre-encoded `CheckRequest` bytes and decodes the `CheckResponse`.
#[derive(Clone, Copy, Default)]
pub struct PreEncodedCheckCodec;

pub struct BytesEncoder;

pub struct CheckResponseDecoder;

impl Codec for PreEncodedCheckCodec {
    type Encode = Bytes;
    type Decode = CheckResponse;
    type Encoder = BytesEncoder;
    type Decoder = CheckResponseDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        BytesEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        CheckResponseDecoder
    }
}

impl Encoder for BytesEncoder {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for CheckResponseDecoder {
    type Item = CheckResponse;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<CheckResponse>, Status> {
        CheckResponse::decode(src)
            .map(Some)
            .map_err(|error| Status::internal(format!("invalid CheckResponse: {error}")))
    }
}
