//! Which host other nodes and redirects use to reach this node.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

#[derive(Debug, thiserror::Error)]
pub enum AdvertiseError {
    #[error("listing network interfaces: {0}")]
    Interfaces(std::io::Error),
    #[error("interface {0:?} has no IPv4 or IPv6 address (known: {1})")]
    NoSuchInterface(String, String),
    #[error("cannot resolve advertise host {0:?}")]
    Unresolvable(String),
}

/// SPEC §1: `--advertise-host`, else the IP of `--bind-interface`, else the
/// host of `--api-addr` unless it is unspecified, else 127.0.0.1.
pub fn resolve(
    advertise_host: Option<&str>,
    bind_interface: Option<&str>,
    api_addr: SocketAddr,
) -> Result<String, AdvertiseError> {
    if let Some(host) = advertise_host.filter(|h| !h.is_empty()) {
        return Ok(host.to_string());
    }
    if let Some(name) = bind_interface.filter(|n| !n.is_empty()) {
        return interface_ip(name).map(|ip| ip.to_string());
    }
    if !api_addr.ip().is_unspecified() {
        return Ok(api_addr.ip().to_string());
    }
    Ok(Ipv4Addr::LOCALHOST.to_string())
}

fn interface_ip(name: &str) -> Result<IpAddr, AdvertiseError> {
    let interfaces = if_addrs::get_if_addrs().map_err(AdvertiseError::Interfaces)?;
    let mut matching: Vec<IpAddr> =
        interfaces.iter().filter(|i| i.name == name).map(|i| i.ip()).collect();
    // Prefer IPv4: it is what a container's eth0 is usually reached on.
    matching.sort_by_key(|ip| !ip.is_ipv4());
    matching.into_iter().next().ok_or_else(|| {
        let mut names: Vec<_> = interfaces.iter().map(|i| i.name.clone()).collect();
        names.dedup();
        AdvertiseError::NoSuchInterface(name.to_string(), names.join(", "))
    })
}

/// `host:port` for advertisement, bracketing IPv6 literals.
pub fn host_port(host: &str, port: u16) -> String {
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => format!("[{v6}]:{port}"),
        _ => format!("{host}:{port}"),
    }
}

/// The socket address gossip advertises (chitchat needs an IP): the host is
/// resolved through DNS if it is a name.
pub async fn gossip_socket(host: &str, port: u16) -> Result<SocketAddr, AdvertiseError> {
    let target = host_port(host, port);
    tokio::net::lookup_host(&target)
        .await
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or(AdvertiseError::Unresolvable(host.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precedence_follows_the_spec() {
        let any: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        let specific: SocketAddr = "10.1.2.3:8080".parse().unwrap();
        assert_eq!(resolve(Some("n1.example"), Some("lo"), specific).unwrap(), "n1.example");
        assert_eq!(resolve(None, Some("lo"), specific).unwrap(), "127.0.0.1");
        assert_eq!(resolve(None, None, specific).unwrap(), "10.1.2.3");
        assert_eq!(resolve(None, None, any).unwrap(), "127.0.0.1");
        assert!(matches!(
            resolve(None, Some("nope0"), any),
            Err(AdvertiseError::NoSuchInterface(..))
        ));
    }

    #[test]
    fn ipv6_is_bracketed() {
        assert_eq!(host_port("::1", 80), "[::1]:80");
        assert_eq!(host_port("a.b", 80), "a.b:80");
    }
}
