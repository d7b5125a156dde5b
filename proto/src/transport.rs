//! Dialing a webb or Hubble server, in plaintext or TLS: the one place the
//! CLI, the dashboard and the relay (towards its agents) connect from.
//!
//! TLS is done here with rustls rather than by tonic, because Hubble's
//! `--tls-allow-insecure` needs a verifier tonic does not expose; one code
//! path for every TLS option keeps them all tested the same way.

use std::{
    fmt, io,
    net::IpAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use hyper_util::rt::TokioIo;
use rustls::{
    ClientConfig, RootCertStore,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime, pem::PemObject},
};
use tonic::transport::{Channel, Endpoint, Uri};

/// Client-side TLS options, named after Hubble's `--tls-*` flags.
#[derive(Debug, Clone, Default)]
pub struct ClientTls {
    /// PEM files of CAs to trust; empty means the system's roots.
    pub ca_files: Vec<PathBuf>,
    /// A client certificate and key (PEM) for mutual TLS.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// The name to verify the server certificate against; default: the host
    /// part of the address.
    pub server_name: Option<String>,
    /// Skip verifying the server certificate (`--tls-allow-insecure`).
    pub insecure: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("{address:?} is not an address: use HOST:PORT, [IPv6]:PORT or tls://HOST:PORT")]
    BadAddress { address: String },
    #[error("TLS setup: {0}")]
    Tls(String),
    #[error("cannot connect to {address}: {reason}")]
    Unreachable { address: String, reason: String },
}

/// A server address as users write it: `host:port`, `tls://host:port`,
/// `http://host:port` or `https://...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    pub host: String,
    pub port: u16,
    /// The address asked for TLS (`tls://`, `https://`).
    pub tls: bool,
}

impl Address {
    pub fn parse(s: &str, default_port: u16) -> Result<Self, ConnectError> {
        let bad = || ConnectError::BadAddress {
            address: s.to_owned(),
        };
        let (tls, rest) = if let Some(r) = s.strip_prefix("tls://") {
            (true, r)
        } else if let Some(r) = s.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = s.strip_prefix("http://") {
            (false, r)
        } else if s.contains("://") {
            return Err(bad());
        } else {
            (false, s)
        };
        let rest = rest.trim_end_matches('/');
        if rest.is_empty() || rest.contains('/') {
            return Err(bad());
        }
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or_else(bad)?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().map_err(|_| bad())?,
                None if after.is_empty() => default_port,
                None => return Err(bad()),
            };
            (h.to_owned(), port)
        } else if rest.matches(':').count() > 1 {
            // A bare IPv6 address without a port.
            rest.parse::<IpAddr>().map_err(|_| bad())?;
            (rest.to_owned(), default_port)
        } else {
            match rest.split_once(':') {
                Some((h, p)) => (h.to_owned(), p.parse().map_err(|_| bad())?),
                None => (rest.to_owned(), default_port),
            }
        };
        if host.is_empty() {
            return Err(bad());
        }
        Ok(Self { host, port, tls })
    }

    /// `host:port` with IPv6 hosts bracketed.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.tls {
            write!(f, "tls://{}", self.authority())
        } else {
            f.write_str(&self.authority())
        }
    }
}

/// Connects eagerly, so an unreachable server is reported at once.
pub async fn connect(
    address: &Address,
    tls: Option<&ClientTls>,
    timeout: Duration,
) -> Result<Channel, ConnectError> {
    let endpoint = endpoint(address)?.connect_timeout(timeout);
    let unreachable = |e: tonic::transport::Error| ConnectError::Unreachable {
        address: address.to_string(),
        reason: error_chain(&e),
    };
    let result = match tls_config(address, tls)? {
        None => tokio::time::timeout(timeout, endpoint.connect()).await,
        Some((config, name)) => {
            tokio::time::timeout(
                timeout,
                endpoint.connect_with_connector(connector(config, name)),
            )
            .await
        }
    };
    match result {
        Ok(r) => r.map_err(unreachable),
        Err(_) => Err(ConnectError::Unreachable {
            address: address.to_string(),
            reason: format!("no answer within {timeout:?}"),
        }),
    }
}

/// A channel that connects on first use and reconnects by itself, for
/// long-lived clients (the relay's node connections, the dashboard).
pub fn connect_lazy(
    address: &Address,
    tls: Option<&ClientTls>,
    timeout: Duration,
) -> Result<Channel, ConnectError> {
    let endpoint = endpoint(address)?.connect_timeout(timeout);
    Ok(match tls_config(address, tls)? {
        None => endpoint.connect_lazy(),
        Some((config, name)) => endpoint.connect_with_connector_lazy(connector(config, name)),
    })
}

fn endpoint(address: &Address) -> Result<Endpoint, ConnectError> {
    Endpoint::from_shared(format!("http://{}", address.authority())).map_err(|_| {
        ConnectError::BadAddress {
            address: address.to_string(),
        }
    })
}

/// The whole `source()` chain of an error, as one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let msg = s.to_string();
        if !out.contains(&msg) {
            out.push_str(": ");
            out.push_str(&msg);
        }
        cur = s.source();
    }
    out
}

type TlsSetup = (Arc<ClientConfig>, ServerName<'static>);

fn tls_config(
    address: &Address,
    tls: Option<&ClientTls>,
) -> Result<Option<TlsSetup>, ConnectError> {
    let default = ClientTls::default();
    let tls = match tls {
        Some(t) => t,
        None if address.tls => &default,
        None => return Ok(None),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ConnectError::Tls(e.to_string()))?;
    let builder = if tls.insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
    } else {
        let mut roots = RootCertStore::empty();
        if tls.ca_files.is_empty() {
            let native = rustls_native_certs::load_native_certs();
            for cert in native.certs {
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err(ConnectError::Tls(
                    "no system CA certificates found; pass --tls-ca-cert-files".to_owned(),
                ));
            }
        } else {
            for f in &tls.ca_files {
                for cert in read_certs(f)? {
                    roots
                        .add(cert)
                        .map_err(|e| ConnectError::Tls(format!("{}: {e}", f.display())))?;
                }
            }
        }
        builder.with_root_certificates(roots)
    };
    let mut config = match (&tls.client_cert, &tls.client_key) {
        (Some(cert), Some(key)) => builder
            .with_client_auth_cert(read_certs(cert)?, read_key(key)?)
            .map_err(|e| ConnectError::Tls(format!("client certificate: {e}")))?,
        (None, None) => builder.with_no_client_auth(),
        _ => {
            return Err(ConnectError::Tls(
                "--tls-client-cert-file and --tls-client-key-file go together".to_owned(),
            ));
        }
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    let name = tls
        .server_name
        .clone()
        .unwrap_or_else(|| address.host.clone());
    let name = ServerName::try_from(name.clone())
        .map_err(|_| ConnectError::Tls(format!("{name:?} is not a valid TLS server name")))?;
    Ok(Some((Arc::new(config), name)))
}

type TlsIo = TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

fn connector(
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
) -> impl tower::Service<Uri, Response = TlsIo, Error = io::Error, Future: Send> + Clone + Send + 'static
{
    let connector = tokio_rustls::TlsConnector::from(config);
    tower::service_fn(move |uri: Uri| {
        let connector = connector.clone();
        let name = name.clone();
        async move {
            let host = uri
                .host()
                .unwrap_or_default()
                .trim_matches(['[', ']'])
                .to_owned();
            let port = uri.port_u16().unwrap_or(443);
            let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let tls = connector.connect(name, tcp).await?;
            Ok(TokioIo::new(tls))
        }
    })
}

pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, ConnectError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| ConnectError::Tls(format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(ConnectError::Tls(format!(
            "{}: no PEM certificate in the file",
            path.display()
        )));
    }
    Ok(certs)
}

pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, ConnectError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| {
        ConnectError::Tls(format!(
            "{}: no usable PEM private key: {e}",
            path.display()
        ))
    })
}

/// Server-side TLS for the agent and the relay: a certificate and key, and
/// client CAs that make it mutual TLS.
pub fn server_tls(
    cert: &Path,
    key: &Path,
    client_cas: &[PathBuf],
) -> Result<tonic::transport::ServerTlsConfig, ConnectError> {
    let read =
        |p: &Path| std::fs::read(p).map_err(|e| ConnectError::Tls(format!("{}: {e}", p.display())));
    // Parse up front so a bad file is reported by name, not at handshake.
    read_certs(cert)?;
    read_key(key)?;
    let mut tls = tonic::transport::ServerTlsConfig::new().identity(
        tonic::transport::Identity::from_pem(read(cert)?, read(key)?),
    );
    if !client_cas.is_empty() {
        let mut pem = Vec::new();
        for f in client_cas {
            read_certs(f)?;
            pem.extend(read(f)?);
        }
        tls = tls.client_ca_root(tonic::transport::Certificate::from_pem(pem));
    }
    Ok(tls)
}

/// The connections a gRPC server (agent, relay) accepts on `listener`, with
/// Nagle's algorithm off. With it on, the small frame that ends a stream
/// (the trailers) waits for the client to acknowledge the frame before it,
/// and clients delay that acknowledgement by up to 40 ms on Linux: every
/// `webb observe` took 40 ms longer than its work, and a lone flow in a
/// quiet `--follow` stream could wait as long. tonic sets this only on
/// listeners it binds itself.
pub fn incoming(listener: tokio::net::TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// Accepts any server certificate; signatures are still checked so the
/// handshake is well-formed.
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accepted_connections_send_small_frames_at_once() {
        use futures::StreamExt as _;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut accepted = incoming(listener);
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let server_side = accepted.next().await.unwrap().unwrap();
        assert!(server_side.nodelay().unwrap(), "Nagle is on");
    }

    #[test]
    fn addresses() {
        let a = |s| Address::parse(s, 4245).map(|a| (a.host, a.port, a.tls));
        assert_eq!(
            a("localhost:4245").unwrap(),
            ("localhost".into(), 4245, false)
        );
        assert_eq!(
            a("tls://relay.example:443").unwrap(),
            ("relay.example".into(), 443, true)
        );
        assert_eq!(
            a("http://10.0.0.1:80").unwrap(),
            ("10.0.0.1".into(), 80, false)
        );
        assert_eq!(
            a("[fd00::1]:4244").unwrap(),
            ("fd00::1".into(), 4244, false)
        );
        assert_eq!(a("fd00::1").unwrap(), ("fd00::1".into(), 4245, false));
        assert_eq!(a("relay").unwrap(), ("relay".into(), 4245, false));
        for bad in [
            "",
            "unix:///run/x.sock",
            "host:port",
            "host:70000",
            ":4245",
            "a/b:1",
            "[::1",
        ] {
            assert!(a(bad).is_err(), "{bad}");
        }
        assert_eq!(Address::parse("[::1]:1", 0).unwrap().to_string(), "[::1]:1");
    }
}
