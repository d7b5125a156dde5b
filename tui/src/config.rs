//! `webb config view|get|set|reset`: Hubble's `hubble config`, over webb's
//! config file (`~/.config/webb/config.toml`, or `--config FILE`).
//!
//! The keys are the flags the file may set, named as Hubble names them
//! (`server`, `timeout`, `tls-ca-cert-files`, `port-forward`, `kubeconfig`,
//! `debug`, ...), and `config`, the file's own path (shown, not set).
//! Hubble's `basic-auth-*` keys are not taken: webb has no basic-auth flags. `view` prints the
//! merged settings (environment over file over default) as YAML, `get KEY` one of them;
//! `set KEY [VALUE]` writes one key to the file (no VALUE: its default),
//! checking the value as Hubble does for the flag's type; `reset [KEY]`
//! writes defaults. Like Hubble, `config` works on a file the other
//! commands would refuse, so a bad value can be mended.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

use crate::conn::{Usage, default_config_path};

/// `webb config`.
#[derive(Debug, clap::Subcommand)]
pub enum ConfigCmd {
    /// Display merged configuration settings
    View,
    /// Get an individual value in the config file (no KEY: as view)
    Get { key: Option<String> },
    /// Set an individual value in the config file (no VALUE: its default)
    Set { key: String, value: Option<String> },
    /// Reset all or an individual value in the config file
    Reset { key: Option<String> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bool,
    Duration,
    String,
    StringSlice,
    Uint16,
    /// `config`: the file's own path, shown but not set.
    Path,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Bool => "bool",
            Kind::Duration => "duration",
            Kind::String => "string",
            Kind::StringSlice => "stringSlice",
            Kind::Uint16 => "uint16",
            Kind::Path => "string",
        }
    }
}

/// Every key the config file takes (`conn::ConfigFile`), its type and its
/// default, as the flag's default reads.
const KEYS: &[(&str, Kind, &str)] = &[
    ("config", Kind::Path, ""),
    ("debug", Kind::Bool, "false"),
    ("kube-context", Kind::String, ""),
    ("kube-namespace", Kind::String, "kube-system"),
    ("kubeconfig", Kind::String, ""),
    ("port-forward", Kind::Bool, "false"),
    ("port-forward-port", Kind::Uint16, "4245"),
    ("request-timeout", Kind::Duration, "12s"),
    ("server", Kind::String, "localhost:4245"),
    ("timeout", Kind::Duration, "5s"),
    ("tls", Kind::Bool, "false"),
    ("tls-allow-insecure", Kind::Bool, "false"),
    ("tls-ca-cert-files", Kind::StringSlice, "[]"),
    ("tls-client-cert-file", Kind::String, ""),
    ("tls-client-key-file", Kind::String, ""),
    ("tls-server-name", Kind::String, ""),
];

fn key(name: &str) -> anyhow::Result<(&'static str, Kind, &'static str)> {
    KEYS.iter()
        .find(|(k, ..)| *k == name)
        .copied()
        .ok_or_else(|| Usage(format!("unknown key: {name}")).into())
}

pub fn run(cmd: ConfigCmd, explicit: Option<&Path>) -> anyhow::Result<()> {
    let path = match explicit {
        Some(p) => p.to_owned(),
        None => default_config_path().context("config file undefined (no HOME)")?,
    };
    match cmd {
        ConfigCmd::View | ConfigCmd::Get { key: None } => {
            print!("{}", view(&read(&path)?, &path))
        }
        ConfigCmd::Get { key: Some(k) } => {
            let (name, kind, default) = key(&k)?;
            let table = read(&path)?;
            print!(
                "{}",
                yaml_value(kind, &merged(&table, &path, name, kind, default))
            );
        }
        ConfigCmd::Set { key: k, value } => set(&path, &k, value.as_deref().unwrap_or(""))?,
        ConfigCmd::Reset { key: Some(k) } => set(&path, &k, "")?,
        ConfigCmd::Reset { key: None } => {
            for (name, ..) in KEYS.iter().filter(|(_, kind, _)| *kind != Kind::Path) {
                set(&path, name, "")?;
            }
        }
    }
    Ok(())
}

/// The file as a TOML table; a missing file is empty.
fn read(path: &Path) -> anyhow::Result<toml::Table> {
    match std::fs::read_to_string(path) {
        Ok(text) => toml::from_str(&text)
            .map_err(|e| Usage(format!("config file {}: {e}", path.display())).into()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(toml::Table::new()),
        Err(e) => bail!("config file {}: {e}", path.display()),
    }
}

/// A key's value: the environment's (`WEBB_SERVER`), else the file's, else
/// the default.
fn merged(table: &toml::Table, path: &Path, name: &str, kind: Kind, default: &str) -> toml::Value {
    if kind == Kind::Path {
        return toml::Value::String(path.display().to_string());
    }
    let env = (name == "server")
        .then(|| std::env::var("WEBB_SERVER").ok())
        .flatten()
        .filter(|v| !v.is_empty());
    if let Some(v) = env {
        return toml::Value::String(v);
    }
    table
        .get(name)
        .cloned()
        .unwrap_or_else(|| parse(kind, default).unwrap_or(toml::Value::String(default.into())))
}

/// The merged settings, one `key: value` per line in key order (YAML).
fn view(table: &toml::Table, path: &Path) -> String {
    let mut out = String::new();
    for (name, kind, default) in KEYS {
        let v = yaml_value(*kind, &merged(table, path, name, *kind, default));
        if v.starts_with("- ") {
            out.push_str(&format!("{name}:\n"));
            for line in v.lines() {
                out.push_str(&format!("    {line}\n"));
            }
        } else {
            out.push_str(&format!("{name}: {v}"));
        }
    }
    out
}

/// A value as YAML, with its newline (Go's yaml.v3 for the flag's type).
fn yaml_value(kind: Kind, v: &toml::Value) -> String {
    match (kind, v) {
        (Kind::StringSlice, toml::Value::Array(items)) if items.is_empty() => "[]\n".into(),
        (Kind::StringSlice, toml::Value::Array(items)) => items
            .iter()
            .map(|i| format!("- {}\n", yaml_string(i.as_str().unwrap_or_default())))
            .collect(),
        (_, toml::Value::Boolean(b)) => format!("{b}\n"),
        (_, toml::Value::String(s)) => format!("{}\n", yaml_string(s)),
        (_, other) => format!("{other}\n"),
    }
}

/// A string as YAML writes it: plain when it reads back as the same
/// string, else double-quoted.
fn yaml_string(s: &str) -> String {
    let plain = !s.is_empty()
        && !s.starts_with(|c: char| " -?:,[]{}#&*!|>'\"%@`~".contains(c))
        && !s.ends_with(' ')
        && !s.contains(": ")
        && !s.contains(" #")
        && !s.chars().any(char::is_control)
        && !["true", "false", "null", "yes", "no", "on", "off", "~"]
            .contains(&s.to_ascii_lowercase().as_str())
        && s.parse::<f64>().is_err();
    if plain {
        s.to_owned()
    } else {
        crate::printer::go_quote(s)
    }
}

/// A value from the command line, checked as Hubble checks it for the
/// flag's type.
fn parse(kind: Kind, val: &str) -> Result<toml::Value, String> {
    Ok(match kind {
        Kind::Bool => toml::Value::Boolean(crate::observe::go_bool(val)?),
        Kind::Duration => {
            webb_proto::duration::parse(val).ok_or_else(|| webb_proto::duration::error(val))?;
            toml::Value::String(val.to_owned())
        }
        Kind::String => toml::Value::String(val.to_owned()),
        // Kept as the string given (Hubble's file holds it so), checked as
        // Go's strconv.ParseUint(val, 0, 16) checks it.
        Kind::Uint16 => {
            if !val.bytes().all(|b| b.is_ascii_digit()) || val.is_empty() {
                return Err(format!(
                    "strconv.ParseUint: parsing {val:?}: invalid syntax"
                ));
            }
            if val.parse::<u16>().is_err() {
                return Err(format!(
                    "strconv.ParseUint: parsing {val:?}: value out of range"
                ));
            }
            toml::Value::String(val.to_owned())
        }
        Kind::Path => {
            return Err("the config file's path is set with --config, not in the file".into());
        }
        Kind::StringSlice => {
            let inner = val.trim_start_matches('[').trim_end_matches(']');
            toml::Value::Array(if inner.is_empty() {
                Vec::new()
            } else {
                inner
                    .split(',')
                    .map(|s| toml::Value::String(s.to_owned()))
                    .collect()
            })
        }
    })
}

/// Writes one key (an empty value: its default) to the file, keeping the
/// rest of it.
fn set(path: &PathBuf, name: &str, value: &str) -> anyhow::Result<()> {
    let (name, kind, default) = key(name)?;
    if kind == Kind::Path {
        return Err(Usage(format!(
            "cannot set {name}: the config file's path is given with --config"
        ))
        .into());
    }
    let val = if value.is_empty() { default } else { value };
    let parsed = parse(kind, val).map_err(|e| {
        Usage(format!(
            "cannot assign value={value} for key={name}, expected type={}: {e}",
            kind.name()
        ))
    })?;
    let mut table = read(path)?;
    table.insert(name.to_owned(), parsed);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the config directory {}", dir.display()))?;
    }
    let text = toml::to_string(&table).context("writing the config as TOML")?;
    // Written whole to a temporary file and renamed: a crash leaves the old
    // file or the new one, never half of one.
    let tmp = path.with_extension("toml.tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_get_view_and_reset_round_trip_through_the_file() {
        let dir = std::env::temp_dir().join(format!("webb-config-{}", std::process::id()));
        let path = dir.join("sub/config.toml");
        let _ = std::fs::remove_dir_all(&dir);
        let table = read(&path).unwrap();
        let v = view(&table, &path);
        assert!(
            v.starts_with(&format!("config: {}\ndebug: false\n", path.display())),
            "{v}"
        );
        assert!(
            v.contains("kubeconfig: \"\"\nport-forward: false\nport-forward-port: \"4245\"\nrequest-timeout: 12s\nserver: localhost:4245\n"),
            "{v}"
        );
        assert!(v.contains("tls-ca-cert-files: []\ntls-client-cert-file: \"\"\n"));

        set(&path, "server", "relay.example:4245").unwrap();
        set(&path, "tls", "T").unwrap();
        set(&path, "tls-ca-cert-files", "[/a.pem,/b.pem]").unwrap();
        let table = read(&path).unwrap();
        let v = view(&table, &path);
        assert!(v.contains("server: relay.example:4245\n"), "{v}");
        assert!(v.contains("tls: true\n"), "{v}");
        assert!(
            v.contains("tls-ca-cert-files:\n    - /a.pem\n    - /b.pem\n"),
            "{v}"
        );
        // The other commands read what config wrote.
        let conf = crate::conn::load_config(Some(&path)).unwrap();
        assert_eq!(conf.server.as_deref(), Some("relay.example:4245"));
        assert!(conf.tls);
        assert_eq!(conf.tls_ca_cert_files.len(), 2);

        let e = set(&path, "timeout", "soon").unwrap_err().to_string();
        assert!(
            e.starts_with("cannot assign value=soon for key=timeout, expected type=duration"),
            "{e}"
        );
        let e = set(&path, "tls", "maybe").unwrap_err().to_string();
        assert!(e.contains("expected type=bool"), "{e}");
        assert_eq!(
            set(&path, "nope", "1").unwrap_err().to_string(),
            "unknown key: nope"
        );
        let e = set(&path, "port-forward-port", "abc")
            .unwrap_err()
            .to_string();
        assert!(
            e.ends_with("expected type=uint16: strconv.ParseUint: parsing \"abc\": invalid syntax"),
            "{e}"
        );
        let e = set(&path, "port-forward-port", "70000")
            .unwrap_err()
            .to_string();
        assert!(e.ends_with("value out of range"), "{e}");
        assert!(
            set(&path, "config", "/x").is_err(),
            "the file's path is not in the file"
        );

        // The Kubernetes keys reach the commands: -P, its port and where.
        set(&path, "port-forward", "true").unwrap();
        set(&path, "port-forward-port", "4300").unwrap();
        set(&path, "kube-namespace", "webb").unwrap();
        set(&path, "kube-context", "lab").unwrap();
        set(&path, "debug", "true").unwrap();
        let conf = crate::conn::load_config(Some(&path)).unwrap();
        assert!(conf.debug && conf.port_forward);
        assert_eq!(conf.port_forward_port, Some(4300));
        let args = crate::conn::ServerArgs::default().with_config(&conf);
        assert!(args.port_forward);
        assert_eq!(
            (args.port_forward_port(), args.kube_namespace()),
            (4300, "webb")
        );
        assert_eq!(args.kube_context.as_deref(), Some("lab"));
        // A --server on the command line wins over the file's port-forward,
        // and flags win over the file.
        let flags = crate::conn::ServerArgs {
            server: Some("relay:4245".into()),
            kube_namespace: Some("other".into()),
            ..Default::default()
        }
        .with_config(&conf);
        assert!(!flags.port_forward);
        assert_eq!(flags.kube_namespace(), "other");

        set(&path, "server", "").unwrap();
        assert!(view(&read(&path).unwrap(), &path).contains("server: localhost:4245\n"));
        for (name, ..) in KEYS.iter().filter(|(_, kind, _)| *kind != Kind::Path) {
            set(&path, name, "").unwrap();
        }
        let conf = crate::conn::load_config(Some(&path)).unwrap();
        assert!(!conf.tls && conf.tls_ca_cert_files.is_empty());
        // Reset writes "" for the unset paths; they stay unset.
        assert!(conf.tls_client_cert_file.is_none() && conf.tls_server_name.is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn strings_are_quoted_only_when_yaml_needs_it() {
        assert_eq!(yaml_string("localhost:4245"), "localhost:4245");
        assert_eq!(yaml_string(""), "\"\"");
        assert_eq!(yaml_string("true"), "\"true\"");
        assert_eq!(yaml_string("- x"), "\"- x\"");
        assert_eq!(yaml_string("a\u{1b}b"), "\"a\\x1bb\"");
    }
}
