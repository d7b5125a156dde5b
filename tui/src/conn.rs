//! Where the server is and how to reach it: Hubble's server flags, the
//! `WEBB_SERVER` variable and the config file, in that order of precedence.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;
use tonic::transport::Channel;
use webb_proto::transport::{self, Address, ClientTls};

/// The hint printed when nothing answers.
pub const PORT_FORWARD_HINT: &str = "is a webb relay or agent listening there? In Kubernetes: kubectl -n kube-system port-forward svc/webb-relay 4245:80";

/// A bad value found after parsing (in the config file or `--server`):
/// reported like clap's usage errors, with exit code 2, before connecting.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Usage(pub String);

#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServerArgs {
    /// Address of a webb or Hubble relay or agent; tls:// means TLS
    /// [default: localhost:4245, or `server` in the config file]
    #[arg(
        long,
        allow_hyphen_values = true,
        env = "WEBB_SERVER",
        hide_env_values = true,
        help_heading = "Server"
    )]
    pub server: Option<String>,
    /// How long to wait for the connection [default: 5s]
    #[arg(long, allow_hyphen_values = true, value_parser = parse_go_duration, help_heading = "Server")]
    pub timeout: Option<Duration>,
    /// How long to wait for a (non-streaming) request [default: 12s]
    #[arg(long, allow_hyphen_values = true, value_parser = parse_go_duration, help_heading = "Server")]
    pub request_timeout: Option<Duration>,
    /// Use TLS to the server
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = crate::observe::go_bool, action = clap::ArgAction::Set, value_name = "BOOL", hide_default_value = true, help_heading = "Server")]
    pub tls: bool,
    /// Do not verify the server's certificate (testing only)
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = crate::observe::go_bool, action = clap::ArgAction::Set, value_name = "BOOL", hide_default_value = true, help_heading = "Server")]
    pub tls_allow_insecure: bool,
    /// PEM files of CAs to trust instead of the system's (comma-separated)
    #[arg(
        long,
        allow_hyphen_values = true,
        value_delimiter = ',',
        value_name = "FILES",
        help_heading = "Server"
    )]
    pub tls_ca_cert_files: Vec<PathBuf>,
    /// Client certificate (PEM) for mutual TLS
    #[arg(
        long,
        allow_hyphen_values = true,
        value_name = "FILE",
        help_heading = "Server"
    )]
    pub tls_client_cert_file: Option<PathBuf>,
    /// Client key (PEM) for mutual TLS
    #[arg(
        long,
        allow_hyphen_values = true,
        value_name = "FILE",
        help_heading = "Server"
    )]
    pub tls_client_key_file: Option<PathBuf>,
    /// Name to verify the server's certificate against [default: the host]
    #[arg(
        long,
        allow_hyphen_values = true,
        value_name = "NAME",
        help_heading = "Server"
    )]
    pub tls_server_name: Option<String>,
    /// Reach the relay through a port-forward to its Service
    /// (webb-relay in --kube-namespace), opened through the Kubernetes API
    /// for the life of the command
    #[arg(short = 'P', long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = crate::observe::go_bool, action = clap::ArgAction::Set, value_name = "BOOL", hide_default_value = true, help_heading = "Server")]
    pub port_forward: bool,
    /// Local port of --port-forward (0: any free port) [default: 4245]
    #[arg(long, allow_hyphen_values = true, help_heading = "Server")]
    pub port_forward_port: Option<u16>,
    /// kubeconfig for --port-forward [default: KUBECONFIG, ~/.kube/config]
    #[arg(
        long,
        allow_hyphen_values = true,
        value_name = "FILE",
        help_heading = "Server"
    )]
    pub kubeconfig: Option<PathBuf>,
    /// kubeconfig context for --port-forward [default: its current context]
    #[arg(
        long,
        allow_hyphen_values = true,
        value_name = "NAME",
        help_heading = "Server"
    )]
    pub kube_context: Option<String>,
    /// Namespace of the webb-relay Service for --port-forward
    /// [default: kube-system]
    #[arg(long, allow_hyphen_values = true, help_heading = "Server")]
    pub kube_namespace: Option<String>,
}

impl ServerArgs {
    /// The flags with what the config file sets for the ones not given.
    pub(crate) fn with_config(&self, config: &ConfigFile) -> Self {
        let mut a = self.clone();
        // `port-forward: true` in the file is -P, unless --server says
        // where to go.
        a.port_forward |= config.port_forward && a.server.is_none();
        a.port_forward_port = a.port_forward_port.or(config.port_forward_port);
        a.kubeconfig = a.kubeconfig.or_else(|| config.kubeconfig.clone());
        a.kube_context = a.kube_context.or_else(|| config.kube_context.clone());
        a.kube_namespace = a.kube_namespace.or_else(|| config.kube_namespace.clone());
        a
    }

    pub fn port_forward_port(&self) -> u16 {
        self.port_forward_port.unwrap_or(4245)
    }

    pub fn kube_namespace(&self) -> &str {
        self.kube_namespace.as_deref().unwrap_or("kube-system")
    }
}

/// A Go duration, signed as Go's are; a negative one is no time at all
/// (Hubble takes `--timeout -1s`, and times out at once).
fn parse_go_duration(s: &str) -> Result<Duration, String> {
    crate::time::parse_duration(s)
        .map(|d| d.to_std().unwrap_or(Duration::ZERO))
        .ok_or_else(|| webb_proto::duration::error(s))
}

/// `~/.config/webb/config.toml`: defaults for the server flags.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ConfigFile {
    pub server: Option<String>,
    pub timeout: Option<String>,
    pub request_timeout: Option<String>,
    #[serde(default)]
    pub tls: bool,
    #[serde(default)]
    pub tls_allow_insecure: bool,
    #[serde(default)]
    pub tls_ca_cert_files: Vec<PathBuf>,
    pub tls_client_cert_file: Option<PathBuf>,
    pub tls_client_key_file: Option<PathBuf>,
    pub tls_server_name: Option<String>,
    /// `observe -D` for every run.
    #[serde(default)]
    pub debug: bool,
    /// `-P` for every command that has no `--server`.
    #[serde(default)]
    pub port_forward: bool,
    #[serde(default, deserialize_with = "port")]
    pub port_forward_port: Option<u16>,
    pub kubeconfig: Option<PathBuf>,
    pub kube_context: Option<String>,
    pub kube_namespace: Option<String>,
}

/// `port-forward-port`: a number, or a string of one (`webb config set`
/// writes a string, as Hubble's file holds it); empty is unset.
fn port<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Port {
        N(u16),
        S(String),
    }
    match Port::deserialize(d)? {
        Port::N(n) => Ok(Some(n)),
        Port::S(s) if s.is_empty() => Ok(None),
        Port::S(s) => s
            .parse()
            .map(Some)
            .map_err(|_| serde::de::Error::custom(format!("port-forward-port: not a port: {s:?}"))),
    }
}

pub fn default_config_path() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("XDG_CONFIG_HOME").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir).join("webb/config.toml"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config/webb/config.toml"))
}

/// Loads the config file (`--config`, else the default path). As Hubble
/// does, a file that is not there is no config (flags and defaults only),
/// even when named; one that cannot be read or parsed is warned about on
/// stderr and not used (Hubble ignores it silently).
pub fn load_config(explicit: Option<&Path>) -> anyhow::Result<ConfigFile> {
    let path = match explicit {
        Some(p) => p.to_owned(),
        None => match default_config_path() {
            Some(p) => p,
            None => return Ok(ConfigFile::default()),
        },
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(ConfigFile::default());
        }
        Err(e) => {
            eprintln!("webb: config file {} not used: {e}", path.display());
            return Ok(ConfigFile::default());
        }
    };
    let mut conf: ConfigFile = match toml::from_str(&text) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("webb: config file {} not used: {e}", path.display());
            return Ok(ConfigFile::default());
        }
    };
    // An empty value is an unset one (`webb config reset` writes them).
    let blank = |s: &mut Option<String>| {
        if s.as_deref() == Some("") {
            *s = None;
        }
    };
    blank(&mut conf.server);
    blank(&mut conf.timeout);
    blank(&mut conf.request_timeout);
    blank(&mut conf.tls_server_name);
    blank(&mut conf.kube_context);
    blank(&mut conf.kube_namespace);
    for p in [
        &mut conf.tls_client_cert_file,
        &mut conf.tls_client_key_file,
        &mut conf.kubeconfig,
    ] {
        if p.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
            *p = None;
        }
    }
    Ok(conf)
}

/// The server options after flags, environment and config file are merged.
#[derive(Debug, Clone)]
pub struct Server {
    pub address: Address,
    pub tls: Option<ClientTls>,
    pub timeout: Duration,
    pub request_timeout: Duration,
}

impl Server {
    /// The server, through a port-forward when `-P` asks for one (the
    /// forward lasts as long as the returned guard).
    pub async fn resolve_forwarded(
        args: &ServerArgs,
        config: &ConfigFile,
    ) -> anyhow::Result<(Self, Option<crate::portforward::PortForward>)> {
        let args = &args.with_config(config);
        if !args.port_forward {
            return Ok((Self::resolve(args, config)?, None));
        }
        if args.server.is_some() {
            return Err(Usage("--server and --port-forward cannot be used together".into()).into());
        }
        let pf = crate::portforward::PortForward::start(args).await?;
        let forwarded = ServerArgs {
            server: Some(pf.local.to_string()),
            ..args.clone()
        };
        Ok((Self::resolve(&forwarded, config)?, Some(pf)))
    }

    /// What Hubble refuses in the server flags before it reads a file or
    /// dials: a client certificate without its key, or a key without its
    /// certificate (flags and config file together).
    pub fn check(args: &ServerArgs, config: &ConfigFile) -> anyhow::Result<()> {
        let cert = args.tls_client_cert_file.is_some() || config.tls_client_cert_file.is_some();
        let key = args.tls_client_key_file.is_some() || config.tls_client_key_file.is_some();
        if cert != key {
            anyhow::bail!(Usage(
                "invalid flag(s): certificate and private key are both required, but only one was provided"
                    .into()
            ));
        }
        Ok(())
    }

    pub fn resolve(args: &ServerArgs, config: &ConfigFile) -> anyhow::Result<Self> {
        let raw = args
            .server
            .clone()
            .or_else(|| config.server.clone())
            .unwrap_or_else(|| format!("localhost:{}", webb_proto::DEFAULT_RELAY_PORT));
        let address = Address::parse(&raw, webb_proto::DEFAULT_RELAY_PORT)
            .map_err(|e| Usage(format!("--server: {e}")))?;
        let dur =
            |flag: Option<Duration>, conf: &Option<String>, name: &str, default| match (flag, conf)
            {
                (Some(d), _) => Ok(d),
                (None, Some(s)) => {
                    parse_go_duration(s).map_err(|e| Usage(format!("config file: {name}: {e}")))
                }
                (None, None) => Ok(default),
            };
        let timeout = dur(
            args.timeout,
            &config.timeout,
            "timeout",
            Duration::from_secs(5),
        )?;
        let request_timeout = dur(
            args.request_timeout,
            &config.request_timeout,
            "request-timeout",
            Duration::from_secs(12),
        )?;
        let wants_tls = args.tls
            || config.tls
            || address.tls
            || args.tls_allow_insecure
            || !args.tls_ca_cert_files.is_empty()
            || args.tls_client_cert_file.is_some()
            || args.tls_server_name.is_some();
        let tls = wants_tls.then(|| ClientTls {
            ca_files: if args.tls_ca_cert_files.is_empty() {
                config.tls_ca_cert_files.clone()
            } else {
                args.tls_ca_cert_files.clone()
            },
            client_cert: args
                .tls_client_cert_file
                .clone()
                .or_else(|| config.tls_client_cert_file.clone()),
            client_key: args
                .tls_client_key_file
                .clone()
                .or_else(|| config.tls_client_key_file.clone()),
            server_name: args
                .tls_server_name
                .clone()
                .or_else(|| config.tls_server_name.clone()),
            insecure: args.tls_allow_insecure || config.tls_allow_insecure,
        });
        Ok(Self {
            address,
            tls,
            timeout,
            request_timeout,
        })
    }

    pub async fn connect(&self) -> anyhow::Result<Channel> {
        transport::connect(&self.address, self.tls.as_ref(), self.timeout)
            .await
            .map_err(|e| match e {
                transport::ConnectError::Unreachable { .. } => {
                    anyhow::anyhow!("{e}\n  {PORT_FORWARD_HINT}")
                }
                other => anyhow::anyhow!(other),
            })
    }

    /// Describes a failed call: the method, the address, the gRPC status.
    pub fn call_error(&self, method: &str, s: &tonic::Status) -> anyhow::Error {
        let hint = if s.code() == tonic::Code::Unavailable {
            format!("\n  {PORT_FORWARD_HINT}")
        } else {
            String::new()
        };
        anyhow::anyhow!(
            "{method} on {}: rpc error: code = {:?} desc = {}{hint}",
            self.address,
            s.code(),
            s.message()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precedence_flag_over_config_over_default() {
        let conf: ConfigFile = toml::from_str(
            "server = \"relay:80\"\ntimeout = \"2s\"\ntls = true\ntls-server-name = \"relay.webb\"\n",
        )
        .unwrap();
        let s = Server::resolve(&ServerArgs::default(), &conf).unwrap();
        assert_eq!(s.address.authority(), "relay:80");
        assert_eq!(s.timeout, Duration::from_secs(2));
        assert_eq!(s.request_timeout, Duration::from_secs(12));
        assert_eq!(s.tls.unwrap().server_name.as_deref(), Some("relay.webb"));

        let args = ServerArgs {
            server: Some("localhost:4244".into()),
            timeout: Some(Duration::from_millis(500)),
            ..Default::default()
        };
        let s = Server::resolve(&args, &ConfigFile::default()).unwrap();
        assert_eq!(s.address.authority(), "localhost:4244");
        assert_eq!(s.timeout, Duration::from_millis(500));
        assert!(s.tls.is_none());

        let s = Server::resolve(&ServerArgs::default(), &ConfigFile::default()).unwrap();
        assert_eq!(s.address.authority(), "localhost:4245");
    }

    #[test]
    fn config_errors_name_the_key() {
        let e = toml::from_str::<ConfigFile>("sever = \"x\"\n").unwrap_err();
        assert!(e.to_string().contains("sever"), "{e}");
        let conf: ConfigFile = toml::from_str("timeout = \"soon\"\n").unwrap();
        let e = Server::resolve(&ServerArgs::default(), &conf).unwrap_err();
        assert!(e.to_string().contains("timeout"), "{e}");
    }
}
