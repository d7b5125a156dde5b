//! `webb watch peers`: the Peer service's change notifications (which nodes
//! a server knows, as they come and go), printed as `hubble watch peers`
//! prints them.

use std::io::{self, Write};

use futures::StreamExt as _;
use webb_proto::peer::{
    ChangeNotification, ChangeNotificationType, NotifyRequest, peer_client::PeerClient,
};

use crate::{
    conn::{ConfigFile, Server, ServerArgs},
    printer::hubble_escape,
};

/// Streams the server's peer changes until it ends the stream.
pub async fn peers(args: &ServerArgs, config: &ConfigFile) -> anyhow::Result<()> {
    let (server, _forward) = Server::resolve_forwarded(args, config).await?;
    let channel = server.connect().await?;
    let mut stream = PeerClient::new(channel)
        .notify(NotifyRequest {})
        .await
        .map_err(|s| server.call_error("Peer.Notify", &s))?
        .into_inner();
    let mut out = io::stdout().lock();
    while let Some(item) = stream.next().await {
        let n = item.map_err(|s| server.call_error("Peer.Notify stream", &s))?;
        match out
            .write_all(line(&n).as_bytes())
            .and_then(|()| out.flush())
        {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(()),
            other => other?,
        }
    }
    Ok(())
}

/// `TYPE ADDRESS NAME`, the type padded to 12 as Hubble pads it, with the
/// TLS server name when the peer has one. Escaped for the terminal: a node
/// name comes from the cluster.
fn line(n: &ChangeNotification) -> String {
    let ty = ChangeNotificationType::try_from(n.r#type)
        .map(|t| t.as_str_name().to_owned())
        .unwrap_or_else(|_| n.r#type.to_string());
    let tls = n
        .tls
        .as_ref()
        .map(|t| format!(" (TLS.ServerName: {})", t.server_name))
        .unwrap_or_default();
    let text = format!("{ty:<12} {} {}{tls}\n", n.address, n.name);
    hubble_escape(&text, false).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use webb_proto::peer::Tls;

    #[test]
    fn lines_as_hubble_prints_them() {
        let mut n = ChangeNotification {
            name: "kind-worker".into(),
            address: "10.0.0.2:4244".into(),
            r#type: ChangeNotificationType::PeerAdded as i32,
            tls: None,
        };
        assert_eq!(line(&n), "PEER_ADDED   10.0.0.2:4244 kind-worker\n");
        n.r#type = ChangeNotificationType::PeerDeleted as i32;
        n.tls = Some(Tls {
            server_name: "kind-worker.default.hubble-grpc.cilium.io".into(),
        });
        assert_eq!(
            line(&n),
            "PEER_DELETED 10.0.0.2:4244 kind-worker (TLS.ServerName: kind-worker.default.hubble-grpc.cilium.io)\n"
        );
        n.r#type = 42;
        n.tls = None;
        n.name = "evil\x1b[2J".into();
        assert_eq!(line(&n), "42           10.0.0.2:4244 evil^[[2J\n");
    }
}
