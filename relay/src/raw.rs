//! Flows as the relay moves them: the message bytes as a node sent them,
//! plus the two things the merge needs (the time and what kind of response
//! it is), read straight from the protobuf wire format.
//!
//! Decoding every flow into a `GetFlowsResponse` and encoding it again for
//! the client was most of the relay's work; forwarding the bytes makes the
//! relay's cost per flow a copy.

use std::task::{Context, Poll};

use bytes::{Buf, BufMut, Bytes};
use futures::future::BoxFuture;
use prost::{
    Message as _,
    encoding::{WireType, decode_key, decode_varint},
};
use tonic::{
    Status,
    codec::{BufferSettings, Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    codegen::{Body, StdError, http},
    server::{NamedService, ServerStreamingService},
};
use webb_proto::{
    observer::{GetFlowsRequest, GetFlowsResponse, get_flows_response::ResponseTypes},
    undecoded::RequestEncoder,
    wkt::Timestamp,
};

/// A response whose bytes are not a well-formed GetFlowsResponse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError(String);

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl WireError {
    fn new(s: &str) -> Self {
        Self(s.to_owned())
    }
}

impl From<prost::DecodeError> for WireError {
    fn from(e: prost::DecodeError) -> Self {
        Self(e.to_string())
    }
}

/// What a response carries (the oneof `response_types`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Flow,
    NodeStatus,
    LostEvents,
    /// None of the above: a webb agent's heartbeat.
    Heartbeat,
}

/// One `GetFlowsResponse`, still encoded.
#[derive(Debug, Clone)]
pub struct Raw {
    pub bytes: Bytes,
    pub time: Option<Timestamp>,
    pub kind: Kind,
}

impl Raw {
    pub fn from_message(m: &GetFlowsResponse) -> Self {
        let kind = match m.response_types {
            Some(ResponseTypes::Flow(_)) => Kind::Flow,
            Some(ResponseTypes::NodeStatus(_)) => Kind::NodeStatus,
            Some(ResponseTypes::LostEvents(_)) => Kind::LostEvents,
            None => Kind::Heartbeat,
        };
        Self {
            bytes: Bytes::from(m.encode_to_vec()),
            time: m.time.or(match &m.response_types {
                Some(ResponseTypes::Flow(f)) => f.time,
                _ => None,
            }),
            kind,
        }
    }

    /// The whole message (tests, and the typed API path).
    pub fn decode(&self) -> Result<GetFlowsResponse, prost::DecodeError> {
        GetFlowsResponse::decode(self.bytes.clone())
    }

    /// Reads the kind and the time: the response's `time` (1001), else its
    /// flow's `time` (1).
    pub fn parse(bytes: Bytes) -> Result<Self, WireError> {
        let mut b: &[u8] = &bytes;
        let mut kind = Kind::Heartbeat;
        let mut time = None;
        let mut flow_time = None;
        while b.has_remaining() {
            let (tag, wire) = decode_key(&mut b)?;
            match (tag, wire) {
                (1 | 2 | 3 | 1001, WireType::LengthDelimited) => {
                    let body = take_len(&mut b)?;
                    match tag {
                        1 => {
                            kind = Kind::Flow;
                            flow_time = flow_time_of(body)?;
                        }
                        2 => kind = Kind::NodeStatus,
                        3 => kind = Kind::LostEvents,
                        _ => time = Some(timestamp(body)?),
                    }
                }
                (_, w) => skip(&mut b, w)?,
            }
        }
        Ok(Self {
            time: time.or(flow_time),
            kind,
            bytes,
        })
    }
}

fn take_len<'a>(b: &mut &'a [u8]) -> Result<&'a [u8], WireError> {
    let len = decode_varint(b)? as usize;
    if len > b.len() {
        return Err(WireError::new("length past the end of the message"));
    }
    let (body, rest) = b.split_at(len);
    *b = rest;
    Ok(body)
}

fn skip(b: &mut &[u8], w: WireType) -> Result<(), WireError> {
    let n = match w {
        WireType::Varint => {
            decode_varint(b)?;
            return Ok(());
        }
        WireType::SixtyFourBit => 8,
        WireType::ThirtyTwoBit => 4,
        WireType::LengthDelimited => {
            take_len(b)?;
            return Ok(());
        }
        WireType::StartGroup | WireType::EndGroup => {
            return Err(WireError::new("groups are not used by this API"));
        }
    };
    if n > b.len() {
        return Err(WireError::new("field past the end of the message"));
    }
    b.advance(n);
    Ok(())
}

fn timestamp(mut b: &[u8]) -> Result<Timestamp, WireError> {
    let (mut seconds, mut nanos) = (0i64, 0i32);
    while b.has_remaining() {
        match decode_key(&mut b)? {
            (1, WireType::Varint) => seconds = decode_varint(&mut b)? as i64,
            (2, WireType::Varint) => nanos = decode_varint(&mut b)? as i32,
            (_, w) => skip(&mut b, w)?,
        }
    }
    Ok(Timestamp { seconds, nanos })
}

fn flow_time_of(mut b: &[u8]) -> Result<Option<Timestamp>, WireError> {
    while b.has_remaining() {
        match decode_key(&mut b)? {
            (1, WireType::LengthDelimited) => return Ok(Some(timestamp(take_len(&mut b)?)?)),
            (_, w) => skip(&mut b, w)?,
        }
    }
    Ok(None)
}

/// Big buffers: flows are ~1 KiB and come in bursts.
fn buffers() -> BufferSettings {
    BufferSettings::new(256 * 1024, 1024 * 1024)
}

/// Relay -> node: typed request out, raw responses in.
#[derive(Debug, Clone, Copy, Default)]
pub struct NodeCodec;
/// Client -> relay: typed request in, raw responses out.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClientCodec;

#[derive(Debug, Clone, Copy, Default)]
pub struct RequestDecoder;
#[derive(Debug, Clone, Copy, Default)]
pub struct RawEncoder;
#[derive(Debug, Clone, Copy, Default)]
pub struct RawDecoder;

impl Decoder for RequestDecoder {
    type Item = GetFlowsRequest;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<GetFlowsRequest>, Status> {
        GetFlowsRequest::decode(src)
            .map(Some)
            .map_err(|e| Status::invalid_argument(format!("GetFlowsRequest: {e}")))
    }
}

impl Encoder for RawEncoder {
    type Item = Raw;
    type Error = Status;
    fn encode(&mut self, item: Raw, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item.bytes);
        Ok(())
    }
    fn buffer_settings(&self) -> BufferSettings {
        buffers()
    }
}

impl Decoder for RawDecoder {
    type Item = Raw;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Raw>, Status> {
        let bytes = src.copy_to_bytes(src.remaining());
        Raw::parse(bytes)
            .map(Some)
            .map_err(|e| Status::internal(format!("a node sent a malformed GetFlowsResponse: {e}")))
    }
    fn buffer_settings(&self) -> BufferSettings {
        buffers()
    }
}

impl Codec for NodeCodec {
    type Encode = GetFlowsRequest;
    type Decode = Raw;
    type Encoder = RequestEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> RequestEncoder {
        RequestEncoder
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

impl Codec for ClientCodec {
    type Encode = Raw;
    type Decode = GetFlowsRequest;
    type Encoder = RawEncoder;
    type Decoder = RequestDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RequestDecoder {
        RequestDecoder
    }
}

pub const GET_FLOWS: &str = "/observer.Observer/GetFlows";

/// The Observer service as clients see it: GetFlows answered with raw
/// bytes, every other method by the typed service.
#[derive(Clone)]
pub struct ObserverService<S> {
    pub typed: S,
    pub get_flows: crate::server::Relay,
}

impl<S> NamedService for ObserverService<S> {
    const NAME: &'static str = "observer.Observer";
}

struct GetFlowsHandler(crate::server::Relay);

impl ServerStreamingService<GetFlowsRequest> for GetFlowsHandler {
    type Response = Raw;
    type ResponseStream = tokio_stream::wrappers::ReceiverStream<Result<Raw, Status>>;
    type Future = BoxFuture<'static, Result<tonic::Response<Self::ResponseStream>, Status>>;

    fn call(&mut self, request: tonic::Request<GetFlowsRequest>) -> Self::Future {
        let relay = self.0.clone();
        Box::pin(async move {
            let rx = relay.get_flows_raw(request.into_inner())?;
            Ok(tonic::Response::new(
                tokio_stream::wrappers::ReceiverStream::new(rx),
            ))
        })
    }
}

impl<S, B> tower::Service<http::Request<B>> for ObserverService<S>
where
    S: tower::Service<
            http::Request<B>,
            Response = http::Response<tonic::body::Body>,
            Error = std::convert::Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + 'static,
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.typed.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() == GET_FLOWS {
            let handler = GetFlowsHandler(self.get_flows.clone());
            return Box::pin(async move {
                let mut grpc =
                    tonic::server::Grpc::new(ClientCodec).max_decoding_message_size(64 << 20);
                Ok(grpc.server_streaming(handler, req).await)
            });
        }
        Box::pin(self.typed.call(req))
    }
}

#[cfg(test)]
mod tests {
    use webb_proto::{
        flow::{Flow, LostEvent},
        relay::NodeStatusEvent,
    };

    use super::*;

    fn ts(s: i64, n: i32) -> Option<Timestamp> {
        Some(Timestamp {
            seconds: s,
            nanos: n,
        })
    }

    #[test]
    fn parse_reads_kind_and_time_from_the_wire() {
        let cases = [
            (
                GetFlowsResponse {
                    time: ts(1700000000, 5),
                    node_name: "n".into(),
                    response_types: Some(ResponseTypes::Flow(Box::new(Flow {
                        time: ts(1, 1),
                        node_name: "n".into(),
                        ..Default::default()
                    }))),
                },
                Kind::Flow,
                ts(1700000000, 5),
            ),
            (
                // No response time: the flow's.
                GetFlowsResponse {
                    response_types: Some(ResponseTypes::Flow(Box::new(Flow {
                        time: ts(42, 7),
                        ..Default::default()
                    }))),
                    ..Default::default()
                },
                Kind::Flow,
                ts(42, 7),
            ),
            (
                GetFlowsResponse {
                    response_types: Some(ResponseTypes::LostEvents(LostEvent::default())),
                    time: ts(3, 0),
                    ..Default::default()
                },
                Kind::LostEvents,
                ts(3, 0),
            ),
            (
                GetFlowsResponse {
                    response_types: Some(ResponseTypes::NodeStatus(NodeStatusEvent::default())),
                    ..Default::default()
                },
                Kind::NodeStatus,
                None,
            ),
            (
                GetFlowsResponse {
                    time: ts(9, 9),
                    node_name: "n".into(),
                    response_types: None,
                },
                Kind::Heartbeat,
                ts(9, 9),
            ),
        ];
        for (msg, kind, time) in cases {
            let raw = Raw::parse(Bytes::from(msg.encode_to_vec())).unwrap();
            assert_eq!(raw.kind, kind);
            assert_eq!(raw.time, time);
            assert_eq!(raw.decode().unwrap(), msg);
        }
    }

    #[test]
    fn malformed_bytes_are_errors_not_panics() {
        let good = GetFlowsResponse {
            time: ts(1, 2),
            response_types: Some(ResponseTypes::Flow(Box::default())),
            ..Default::default()
        }
        .encode_to_vec();
        for cut in 0..good.len() {
            let _ = Raw::parse(Bytes::copy_from_slice(&good[..cut]));
        }
        for junk in [&[0xff_u8; 12][..], &[0x0b], &[0x0a, 0x7f, 0x01]] {
            assert!(
                Raw::parse(Bytes::copy_from_slice(junk)).is_err(),
                "{junk:?}"
            );
        }
    }
}
