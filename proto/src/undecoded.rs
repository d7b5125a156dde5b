//! GetFlows with the responses left undecoded.
//!
//! The generated client decodes each message on the task that reads the
//! HTTP/2 stream, out of tonic's receive buffer. A reader that formats on
//! another thread (`webb observe`) does better to take each message's bytes
//! as they arrived and decode them there: the connection task stays free to
//! read, the decoded flow is allocated and freed on one thread, and prost
//! decodes from one contiguous slice instead of through the buffer's `Buf`
//! calls.

use bytes::{Buf as _, Bytes};
use prost::Message as _;
use tonic::{
    Status, Streaming,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    codegen::http::uri::PathAndQuery,
    transport::Channel,
};

use crate::observer::GetFlowsRequest;

/// Encodes the request with prost and hands each response over as its bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Undecoded;

/// Encodes a GetFlowsRequest with prost (the relay's node codec uses it too).
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestEncoder;

impl Encoder for RequestEncoder {
    type Item = GetFlowsRequest;
    type Error = Status;

    fn encode(&mut self, item: GetFlowsRequest, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst)
            .map_err(|e| Status::internal(format!("encoding the request: {e}")))
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct BytesDecoder;

impl Decoder for BytesDecoder {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        // Splits the message off tonic's buffer without copying it.
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

impl Codec for Undecoded {
    type Encode = GetFlowsRequest;
    type Decode = Bytes;
    type Encoder = RequestEncoder;
    type Decoder = BytesDecoder;

    fn encoder(&mut self) -> RequestEncoder {
        RequestEncoder
    }

    fn decoder(&mut self) -> BytesDecoder {
        BytesDecoder
    }
}

/// `observer.Observer/GetFlows`, each `GetFlowsResponse` as its encoded
/// bytes (decode with `GetFlowsResponse::decode(&bytes[..])`).
/// `max_message` bounds one message, as the generated client's
/// `max_decoding_message_size` does.
pub async fn get_flows(
    channel: Channel,
    request: GetFlowsRequest,
    max_message: usize,
) -> Result<Streaming<Bytes>, Status> {
    let mut grpc = tonic::client::Grpc::new(channel).max_decoding_message_size(max_message);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(format!("the connection is not ready: {e}")))?;
    let mut req = tonic::Request::new(request);
    req.extensions_mut()
        .insert(tonic::GrpcMethod::new("observer.Observer", "GetFlows"));
    let path = PathAndQuery::from_static("/observer.Observer/GetFlows");
    let resp = grpc.server_streaming(req, path, Undecoded).await?;
    Ok(resp.into_inner())
}
