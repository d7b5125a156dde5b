//! The `/metrics` endpoint agent and relay serve: OpenMetrics text from a
//! function called on each scrape, over HTTP/1.1 (hyper).

use std::sync::Arc;

use http_body_util::Full;
use hyper::{Response, body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;

/// The OpenMetrics text content type.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Parses a listen address: `HOST:PORT`, or `:PORT` for every address (as
/// Hubble writes `:9965`).
pub fn parse_listen(s: &str) -> Result<std::net::SocketAddr, String> {
    let full = if s.starts_with(':') {
        format!("0.0.0.0{s}")
    } else {
        s.to_owned()
    };
    full.parse()
        .map_err(|_| format!("{s:?} is not [HOST]:PORT (e.g. :9965 or 127.0.0.1:9965)"))
}

/// Binds `addr` and serves `/metrics` there in the background; returns the
/// bound address.
pub async fn start(
    addr: std::net::SocketAddr,
    encode: Arc<dyn Fn() -> String + Send + Sync>,
) -> std::io::Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tracing::info!(metrics = %local, "serving /metrics");
    tokio::spawn(serve(listener, encode));
    Ok(local)
}

/// Serves `GET /metrics` with `encode()`'s text until the process ends;
/// other paths get 404.
pub async fn serve(
    listener: tokio::net::TcpListener,
    encode: Arc<dyn Fn() -> String + Send + Sync>,
) {
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                // Out of file descriptors, usually: back off, keep serving.
                tracing::warn!("metrics listener: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let encode = encode.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: hyper::Request<Incoming>| {
                let encode = encode.clone();
                async move {
                    if req.uri().path() == "/metrics" {
                        Response::builder()
                            .header("content-type", CONTENT_TYPE)
                            .body(Full::new(bytes::Bytes::from(encode())))
                    } else {
                        Response::builder()
                            .status(404)
                            .body(Full::new(bytes::Bytes::from_static(b"see /metrics\n")))
                    }
                }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn listen_addresses() {
        assert_eq!(
            super::parse_listen(":9965").unwrap().to_string(),
            "0.0.0.0:9965"
        );
        assert_eq!(
            super::parse_listen("127.0.0.1:1").unwrap().to_string(),
            "127.0.0.1:1"
        );
        assert!(
            super::parse_listen("9965")
                .unwrap_err()
                .contains("[HOST]:PORT")
        );
    }
}
