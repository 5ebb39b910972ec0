//! Certificate generation for `raftq certs` and the development fallback.
//!
//! One CA signs two kinds of certificates, told apart by a role URI SAN:
//!
//! | role | issued by | EKUs | SANs | accepted by |
//! |---|---|---|---|---|
//! | node ([`NODE_ROLE_URI`]) | `raftq certs --hosts`, `--name N`, the dev fallback | server-auth + client-auth | every host of the cluster + the role | the Raft port (both ends of its mutual TLS), the public API |
//! | client ([`CLIENT_ROLE_URI`]) | `raftq certs --client NAME` | client-auth | the role only | the public API under `--api-client-ca`; never the Raft port |
//!
//! The role is what the Raft port checks (see
//! [`TlsMaterial::raft_server_config`](super::TlsMaterial::raft_server_config)):
//! the CA alone cannot tell a peer from an API client, since both hold one of
//! its certificates. Keys are ECDSA P-256 (rcgen's default). Key files
//! (and `gossip.key`) are written with mode 0600, through a temporary file
//! and a rename so a crash never leaves half a key behind.
//!
//! A CA already in the output directory is reused rather than replaced, so
//! re-running `raftq certs` (or adding `--name client`) keeps every
//! certificate issued before trusted. rcgen 0.14 without its `x509-parser`
//! feature cannot read a CA certificate back, so the issuer name is copied
//! out of the CA's DER here (single-valued RDNs in UTF8String,
//! PrintableString or IA5String: what rcgen, openssl and cfssl write). Each
//! issued certificate is verified against the CA before it is written.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, DnValue,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::CertificateDer;

use super::{
    parse_certs, read_file, verify_client_chain, TlsError, CLIENT_ROLE_URI, NODE_ROLE_URI,
};

/// CA certificate: the trust root every node and client is given.
pub const CA_CERT_FILE: &str = "ca.pem";
/// CA private key: needed only to issue more certificates.
pub const CA_KEY_FILE: &str = "ca-key.pem";
/// Node certificate shared by every node of the cluster.
pub const NODE_CERT_FILE: &str = "node.pem";
/// Private key of [`NODE_CERT_FILE`].
pub const NODE_KEY_FILE: &str = "node-key.pem";
/// Shared secret that authenticates gossip datagrams (`serve --gossip-key`).
pub const GOSSIP_KEY_FILE: &str = "gossip.key";
/// Random bytes in a new [`GOSSIP_KEY_FILE`]: HMAC-SHA256's block-size
/// guidance asks for at least the output length.
const GOSSIP_KEY_BYTES: usize = 32;

const DAY: Duration = Duration::from_secs(24 * 60 * 60);
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);
const LEAF_VALIDITY: Duration = Duration::from_secs(5 * 365 * 24 * 60 * 60);
/// Certificates start a day in the past to tolerate clock skew between machines.
const BACKDATE: Duration = DAY;

const ORGANIZATION: &str = "raftq";

/// Write `OUT/ca.pem`, `ca-key.pem`, `node.pem` and `node-key.pem`: one CA
/// and one node certificate whose SANs cover every host.
///
/// Creates `OUT` if missing. When `ca.pem` and `ca-key.pem` already exist in
/// `OUT`, that CA signs the new node certificate and is left untouched.
pub fn write_cluster_certs(out: &Path, hosts: &[String]) -> Result<(), TlsError> {
    let hosts = normalize_hosts(hosts);
    if hosts.is_empty() {
        return Err(TlsError::NoHosts);
    }
    create_dir(out)?;
    let ca_cert = out.join(CA_CERT_FILE);
    let ca_key = out.join(CA_KEY_FILE);
    let ca = match (ca_cert.exists(), ca_key.exists()) {
        (true, true) => Ca::load(out)?,
        (false, false) => {
            let ca = Ca::generate()?;
            write_file(&ca_key, ca.key_pem.as_bytes(), true)?;
            write_file(&ca_cert, ca.cert_pem.as_bytes(), false)?;
            ca
        }
        (true, false) => {
            return Err(TlsError::UnusableCa {
                path: ca_cert,
                reason: format!(
                    "{} is missing; restore it, or remove {} to create a new ca",
                    ca_key.display(),
                    CA_CERT_FILE
                ),
            })
        }
        (false, true) => {
            return Err(TlsError::UnusableCa {
                path: ca_key,
                reason: format!(
                    "{} is missing; restore it, or remove {} to create a new ca",
                    ca_cert.display(),
                    CA_KEY_FILE
                ),
            })
        }
    };
    let leaf = ca.issue(&hosts[0], &hosts, Profile::Node)?;
    write_file(&out.join(NODE_KEY_FILE), leaf.key_pem.as_bytes(), true)?;
    write_file(&out.join(NODE_CERT_FILE), leaf.cert_pem.as_bytes(), false)?;
    Ok(())
}

/// Write `OUT/NAME.pem` and `OUT/NAME-key.pem`: a node certificate for
/// `hosts` signed by the CA already in `OUT` (an error if there is none).
/// `hosts` may be empty.
pub fn write_named_cert(out: &Path, name: &str, hosts: &[String]) -> Result<(), TlsError> {
    write_signed_leaf(out, name, hosts, Profile::Node)
}

/// Write `OUT/NAME.pem` and `OUT/NAME-key.pem`: an API client certificate
/// (client-auth only, client role, no hosts) signed by the CA already in
/// `OUT` (an error if there is none). The Raft port refuses it.
pub fn write_client_cert(out: &Path, name: &str) -> Result<(), TlsError> {
    if name == "node" || name == "node-key" {
        // A client certificate in node.pem would lock every node that
        // loads it out of the Raft port.
        return Err(TlsError::InvalidName {
            name: name.to_owned(),
            reason: "would overwrite the node certificate",
        });
    }
    write_signed_leaf(out, name, &[], Profile::Client)
}

/// A role-less certificate, as raftq issued node certificates before roles
/// existed: for tests of what the Raft port and the dev fallback do with one.
#[cfg(test)]
pub(crate) fn write_roleless_cert(
    out: &Path,
    name: &str,
    hosts: &[String],
) -> Result<(), TlsError> {
    write_signed_leaf(out, name, hosts, Profile::Roleless)
}

fn write_signed_leaf(
    out: &Path,
    name: &str,
    hosts: &[String],
    profile: Profile,
) -> Result<(), TlsError> {
    validate_name(name)?;
    let hosts = normalize_hosts(hosts);
    for file in [CA_CERT_FILE, CA_KEY_FILE] {
        let path = out.join(file);
        if !path.exists() {
            return Err(TlsError::MissingCa { dir: out.to_path_buf(), missing: path });
        }
    }
    let ca = Ca::load(out)?;
    let leaf = ca.issue(name, &hosts, profile)?;
    write_file(&out.join(format!("{name}-key.pem")), leaf.key_pem.as_bytes(), true)?;
    write_file(&out.join(format!("{name}.pem")), leaf.cert_pem.as_bytes(), false)?;
    Ok(())
}

/// Write `OUT/gossip.key` (32 random bytes, hex) unless the file exists:
/// every node of a cluster needs the same key, so an existing one is never
/// replaced. Returns whether a key was written.
pub fn write_gossip_key(out: &Path) -> Result<bool, TlsError> {
    use ring::rand::SecureRandom;

    let path = out.join(GOSSIP_KEY_FILE);
    if path.exists() {
        return Ok(false);
    }
    create_dir(out)?;
    let mut key = [0u8; GOSSIP_KEY_BYTES];
    ring::rand::SystemRandom::new()
        .fill(&mut key)
        .map_err(|_| TlsError::Random { path: path.clone() })?;
    let mut text = hex_encode(&key);
    text.push('\n');
    write_file(&path, text.as_bytes(), true)?;
    Ok(true)
}

/// Lower-case hex, two digits per byte.
fn hex_encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    out
}

/// Generate a CA and a node certificate in memory, for
/// [`TlsMaterial::dev`](super::TlsMaterial::dev) and tests.
///
/// Returns `(ca_pem, ca_key_pem, node_cert_pem, node_key_pem)`.
pub fn generate_ca_and_node(
    hosts: &[String],
) -> Result<(String, String, String, String), TlsError> {
    let hosts = normalize_hosts(hosts);
    if hosts.is_empty() {
        return Err(TlsError::NoHosts);
    }
    let ca = Ca::generate()?;
    let leaf = ca.issue(&hosts[0], &hosts, Profile::Node)?;
    Ok((ca.cert_pem, ca.key_pem, leaf.cert_pem, leaf.key_pem))
}

/// Trimmed, non-empty, first occurrence of each host, in order.
pub(crate) fn normalize_hosts(hosts: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(hosts.len());
    for host in hosts.iter().map(|host| host.trim()) {
        if !host.is_empty() && !out.iter().any(|seen| seen == host) {
            out.push(host.to_owned());
        }
    }
    out
}

/// A CA able to sign: its certificate (PEM and DER) and an rcgen issuer.
struct Ca {
    cert_pem: String,
    key_pem: String,
    certs: Vec<CertificateDer<'static>>,
    /// Where the CA came from, for errors.
    path: PathBuf,
    issuer: Issuer<'static, KeyPair>,
}

/// What an issued certificate is for: its extended key usages and its role
/// URI SAN (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Profile {
    Node,
    Client,
    /// A node certificate without a role, as issued before roles existed.
    #[cfg(test)]
    Roleless,
}

/// A freshly issued certificate and its key.
struct Leaf {
    cert_pem: String,
    key_pem: String,
}

impl Ca {
    fn generate() -> Result<Self, TlsError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = distinguished_name("raftq CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        set_validity(&mut params, CA_VALIDITY);
        let cert = params.self_signed(&key)?;
        Ok(Self {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            certs: vec![cert.der().clone()],
            path: PathBuf::from("<generated ca>"),
            issuer: Issuer::new(params, key),
        })
    }

    /// Load `DIR/ca.pem` and `DIR/ca-key.pem` (PKCS#8) to sign with.
    fn load(dir: &Path) -> Result<Self, TlsError> {
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        let cert_bytes = read_file(&cert_path)?;
        let certs = parse_certs(&cert_bytes, &cert_path)?;
        let key_bytes = read_file(&key_path)?;
        let unusable =
            |path: &Path, reason: String| TlsError::UnusableCa { path: path.to_path_buf(), reason };
        let key_pem = String::from_utf8(key_bytes)
            .map_err(|_| unusable(&key_path, "not a utf-8 pem file".to_owned()))?;
        let key = KeyPair::from_pem(&key_pem).map_err(|err| {
            unusable(
                &key_path,
                format!(
                    "cannot load the key (an unencrypted pkcs#8 \"PRIVATE KEY\" is needed): {err}"
                ),
            )
        })?;
        let name = subject_name(&certs[0])
            .ok_or_else(|| unusable(&cert_path, "cannot parse the certificate".to_owned()))
            .and_then(|subject| {
                distinguished_name_from_der(subject)
                    .map_err(|reason| unusable(&cert_path, format!("subject name: {reason}")))
            })?;
        let mut params = CertificateParams::default();
        params.distinguished_name = name;
        Ok(Self {
            cert_pem: String::from_utf8_lossy(&cert_bytes).into_owned(),
            key_pem,
            certs,
            path: cert_path,
            issuer: Issuer::new(params, key),
        })
    }

    /// Issue a certificate for `hosts` with `profile`'s usages and role,
    /// verified against this CA.
    fn issue(
        &self,
        common_name: &str,
        hosts: &[String],
        profile: Profile,
    ) -> Result<Leaf, TlsError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = distinguished_name(common_name);
        params.subject_alt_names =
            hosts.iter().map(|host| subject_alt_name(host)).collect::<Result<_, _>>()?;
        let (role, usages) = match profile {
            Profile::Node => (
                Some(NODE_ROLE_URI),
                vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth],
            ),
            Profile::Client => (Some(CLIENT_ROLE_URI), vec![ExtendedKeyUsagePurpose::ClientAuth]),
            #[cfg(test)]
            Profile::Roleless => (
                None,
                vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth],
            ),
        };
        if let Some(role) = role {
            params.subject_alt_names.push(SanType::URI(role.try_into()?));
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = usages;
        set_validity(&mut params, LEAF_VALIDITY);
        let cert = params.signed_by(&key, &self.issuer)?;

        // Catches a CA key that does not belong to the CA certificate, and a
        // subject name that did not survive the round trip byte for byte.
        verify_client_chain(&[cert.der().clone()], &self.certs).map_err(|reason| {
            TlsError::UnusableCa {
                path: self.path.clone(),
                reason: format!(
                    "a certificate it signed does not verify ({reason}); does {CA_KEY_FILE} belong to {CA_CERT_FILE}?"
                ),
            }
        })?;
        Ok(Leaf { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }
}

fn distinguished_name(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, ORGANIZATION);
    name.push(DnType::CommonName, common_name);
    name
}

fn set_validity(params: &mut CertificateParams, validity: Duration) {
    let now = SystemTime::now();
    params.not_before = now.checked_sub(BACKDATE).unwrap_or(now).into();
    params.not_after = (now + validity).into();
}

/// An IP SAN when `host` parses as an address (brackets allowed for IPv6),
/// else a DNS SAN.
fn subject_alt_name(host: &str) -> Result<SanType, TlsError> {
    let unbracketed =
        host.strip_prefix('[').and_then(|rest| rest.strip_suffix(']')).unwrap_or(host);
    if let Ok(ip) = unbracketed.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    let name = host.try_into().map_err(|err: rcgen::Error| TlsError::InvalidHost {
        host: host.to_owned(),
        reason: err.to_string(),
    })?;
    Ok(SanType::DnsName(name))
}

/// Certificate names become file names next to the CA: keep them plain and
/// never let them overwrite the CA.
fn validate_name(name: &str) -> Result<(), TlsError> {
    let invalid = |reason| TlsError::InvalidName { name: name.to_owned(), reason };
    if name.is_empty() {
        return Err(invalid("empty"));
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) {
        return Err(invalid(
            "only letters, digits, '-', '_' and '.' are allowed (no path separators)",
        ));
    }
    if name.starts_with('.') {
        return Err(invalid("must not start with '.'"));
    }
    if name == "ca" || name == "ca-key" {
        return Err(invalid("would overwrite the ca"));
    }
    Ok(())
}

fn create_dir(dir: &Path) -> Result<(), TlsError> {
    std::fs::create_dir_all(dir)
        .map_err(|source| TlsError::Write { path: dir.to_path_buf(), source })
}

/// Write `contents` to `path` through a temporary file and a rename.
/// `private` files get mode 0600 on Unix.
fn write_file(path: &Path, contents: &[u8], private: bool) -> Result<(), TlsError> {
    use std::io::Write;

    let write_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| TlsError::Write { path, source }
    };
    let file_name =
        path.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{file_name}.tmp"));

    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if private { 0o600 } else { 0o644 });
    }
    let mut file = options.open(&tmp).map_err(write_err(&tmp))?;
    // `mode` applies only to a file it creates: fix up a leftover temp file.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = if private { 0o600 } else { 0o644 };
        file.set_permissions(std::fs::Permissions::from_mode(mode)).map_err(write_err(&tmp))?;
    }
    #[cfg(not(unix))]
    let _ = private;
    file.write_all(contents).map_err(write_err(&tmp))?;
    file.sync_all().map_err(write_err(&tmp))?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(write_err(path))
}

// --- A minimal DER reader: just enough to copy a certificate's subject. ---

/// Split one DER element off `input`: `(tag, contents, rest)`.
fn der_next(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let (bytes, rest) = rest.split_at(count);
        let len = bytes.iter().fold(0usize, |acc, &byte| (acc << 8) | usize::from(byte));
        (len, rest)
    };
    if rest.len() < len {
        return None;
    }
    let (contents, rest) = rest.split_at(len);
    Some((tag, contents, rest))
}

const TAG_SEQUENCE: u8 = 0x30;
const TAG_SET: u8 = 0x31;
const TAG_OID: u8 = 0x06;
const TAG_VERSION: u8 = 0xa0;
const TAG_UTF8_STRING: u8 = 0x0c;
const TAG_PRINTABLE_STRING: u8 = 0x13;
const TAG_IA5_STRING: u8 = 0x16;

/// Contents of the `subject` Name of an X.509 certificate.
fn subject_name<'a>(cert: &'a CertificateDer<'_>) -> Option<&'a [u8]> {
    let (TAG_SEQUENCE, certificate, _) = der_next(cert.as_ref())? else {
        return None;
    };
    let (TAG_SEQUENCE, mut tbs, _) = der_next(certificate)? else {
        return None;
    };
    if let Some((TAG_VERSION, _, rest)) = der_next(tbs) {
        tbs = rest;
    }
    // serialNumber, signature, issuer, validity
    for _ in 0..4 {
        tbs = der_next(tbs)?.2;
    }
    match der_next(tbs)? {
        (TAG_SEQUENCE, subject, _) => Some(subject),
        _ => None,
    }
}

/// Rebuild a Name as rcgen will re-encode it byte for byte.
fn distinguished_name_from_der(mut name: &[u8]) -> Result<DistinguishedName, String> {
    let mut out = DistinguishedName::new();
    while !name.is_empty() {
        let (tag, set, rest) = der_next(name).ok_or("truncated")?;
        name = rest;
        if tag != TAG_SET {
            return Err("malformed relative distinguished name".to_owned());
        }
        let (tag, attribute, rest) = der_next(set).ok_or("truncated")?;
        if tag != TAG_SEQUENCE || !rest.is_empty() {
            return Err("multi-valued relative distinguished names are not supported".to_owned());
        }
        let (tag, oid, rest) = der_next(attribute).ok_or("truncated")?;
        if tag != TAG_OID {
            return Err("malformed attribute type".to_owned());
        }
        let (tag, value, _) = der_next(rest).ok_or("truncated")?;
        let kind = DnType::from_oid(&decode_oid(oid).ok_or("malformed attribute type")?);
        if out.get(&kind).is_some() {
            return Err(format!("repeated attribute {kind:?} is not supported"));
        }
        let text = std::str::from_utf8(value).map_err(|_| "attribute value is not text")?;
        let value = match tag {
            TAG_UTF8_STRING => DnValue::Utf8String(text.to_owned()),
            TAG_PRINTABLE_STRING => DnValue::PrintableString(
                text.try_into().map_err(|err: rcgen::Error| err.to_string())?,
            ),
            TAG_IA5_STRING => {
                DnValue::Ia5String(text.try_into().map_err(|err: rcgen::Error| err.to_string())?)
            }
            other => return Err(format!("string type 0x{other:02x} is not supported")),
        };
        out.push(kind, value);
    }
    Ok(out)
}

/// OID contents to arcs (X.690 §8.19).
fn decode_oid(bytes: &[u8]) -> Option<Vec<u64>> {
    let mut subidentifiers = Vec::new();
    let mut value: u64 = 0;
    for (i, &byte) in bytes.iter().enumerate() {
        value = value.checked_mul(128)? | u64::from(byte & 0x7f);
        if byte & 0x80 == 0 {
            subidentifiers.push(value);
            value = 0;
        } else if i + 1 == bytes.len() {
            return None;
        }
    }
    let (&first, rest) = subidentifiers.split_first()?;
    let (arc0, arc1) = match first {
        0..=39 => (0, first),
        40..=79 => (1, first - 40),
        _ => (2, first - 80),
    };
    let mut arcs = vec![arc0, arc1];
    arcs.extend_from_slice(rest);
    Some(arcs)
}

#[cfg(test)]
mod tests {
    use super::super::install_crypto_provider;
    use super::*;

    fn hosts(list: &[&str]) -> Vec<String> {
        list.iter().map(|host| host.to_string()).collect()
    }

    #[test]
    fn normalize_hosts_trims_dedups_and_drops_empty() {
        install_crypto_provider();
        assert_eq!(normalize_hosts(&hosts(&[" a ", "", "b", "a", "  "])), hosts(&["a", "b"]));
    }

    #[test]
    fn ip_hosts_become_ip_sans_and_names_dns_sans() {
        install_crypto_provider();
        assert!(matches!(subject_alt_name("10.0.0.1"), Ok(SanType::IpAddress(_))));
        assert!(matches!(subject_alt_name("[::1]"), Ok(SanType::IpAddress(_))));
        assert!(matches!(subject_alt_name("node1.example"), Ok(SanType::DnsName(_))));
        assert!(matches!(subject_alt_name("nœud"), Err(TlsError::InvalidHost { .. })));
    }

    #[test]
    fn names_are_plain_file_names() {
        install_crypto_provider();
        for bad in ["", "../x", "a/b", "a\\b", ".hidden", "ca", "ca-key", "a b"] {
            assert!(validate_name(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["client", "node2", "ops-admin_1.example"] {
            assert!(validate_name(good).is_ok(), "{good:?} rejected");
        }
    }

    #[test]
    fn decode_oid_handles_multibyte_arcs() {
        install_crypto_provider();
        // 2.5.4.3 (commonName) and 1.2.840.113549.1.9.1 (emailAddress).
        assert_eq!(decode_oid(&[0x55, 0x04, 0x03]), Some(vec![2, 5, 4, 3]));
        assert_eq!(
            decode_oid(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01]),
            Some(vec![1, 2, 840, 113549, 1, 9, 1])
        );
        assert_eq!(decode_oid(&[0x55, 0x84]), None);
    }

    #[test]
    fn a_foreign_subject_name_round_trips() {
        install_crypto_provider();
        // A CA whose subject uses PrintableString and a custom attribute,
        // as openssl would write it.
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(
            DnType::CountryName,
            DnValue::PrintableString("DE".try_into().expect("printable")),
        );
        name.push(DnType::OrganizationName, "Example GmbH");
        name.push(
            DnType::CustomDnType(vec![1, 2, 840, 113549, 1, 9, 1]),
            DnValue::Ia5String("ca@example.com".try_into().expect("ia5")),
        );
        name.push(DnType::CommonName, "Example Root");
        params.distinguished_name = name.clone();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).expect("self signed");

        let parsed =
            distinguished_name_from_der(subject_name(cert.der()).expect("subject")).expect("parse");
        assert_eq!(parsed, name);

        let dir = tempfile::tempdir().expect("tempdir");
        write_file(&dir.path().join(CA_CERT_FILE), cert.pem().as_bytes(), false).expect("write");
        write_file(&dir.path().join(CA_KEY_FILE), key.serialize_pem().as_bytes(), true)
            .expect("write");
        write_cluster_certs(dir.path(), &hosts(&["127.0.0.1"])).expect("issue with foreign ca");
    }

    #[test]
    fn generate_ca_and_node_rejects_no_hosts() {
        install_crypto_provider();
        assert!(matches!(generate_ca_and_node(&hosts(&["", " "])), Err(TlsError::NoHosts)));
    }

    #[cfg(unix)]
    #[test]
    fn key_files_are_private() {
        install_crypto_provider();
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("new").join("certs");
        write_cluster_certs(&out, &hosts(&["localhost"])).expect("certs");
        write_named_cert(&out, "client", &[]).expect("named");
        let mode = |file: &str| {
            std::fs::metadata(out.join(file)).expect("metadata").permissions().mode() & 0o777
        };
        assert_eq!(mode(CA_KEY_FILE), 0o600);
        assert_eq!(mode(NODE_KEY_FILE), 0o600);
        assert_eq!(mode("client-key.pem"), 0o600);
        assert_eq!(mode(CA_CERT_FILE), 0o644);
        assert_eq!(mode(NODE_CERT_FILE), 0o644);
    }

    #[test]
    fn the_gossip_key_is_private_hex_and_never_replaced() {
        install_crypto_provider();
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("certs");
        assert!(write_gossip_key(&out).expect("first"), "a new key is written");
        let path = out.join(GOSSIP_KEY_FILE);
        let key = std::fs::read_to_string(&path).expect("read");
        assert_eq!(key.trim().len(), GOSSIP_KEY_BYTES * 2, "{key:?}");
        assert!(key.trim().bytes().all(|b| b.is_ascii_hexdigit()), "{key:?}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("metadata").permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        assert!(!write_gossip_key(&out).expect("second"), "an existing key is kept");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), key);
        let other = tempfile::tempdir().expect("tempdir");
        write_gossip_key(other.path()).expect("other");
        let other_key = std::fs::read_to_string(other.path().join(GOSSIP_KEY_FILE)).expect("read");
        assert_ne!(other_key, key, "keys are random");
    }

    #[test]
    fn hex_encoding_is_lower_case_pairs() {
        assert_eq!(hex_encode(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        assert_eq!(hex_encode(&[]), "");
    }

    #[test]
    fn an_existing_ca_is_reused() {
        install_crypto_provider();
        let dir = tempfile::tempdir().expect("tempdir");
        write_cluster_certs(dir.path(), &hosts(&["a.example"])).expect("first");
        let ca_before = std::fs::read(dir.path().join(CA_CERT_FILE)).expect("ca");
        let node_before = std::fs::read(dir.path().join(NODE_CERT_FILE)).expect("node");
        write_cluster_certs(dir.path(), &hosts(&["b.example", "10.1.2.3"])).expect("second");
        assert_eq!(std::fs::read(dir.path().join(CA_CERT_FILE)).expect("ca"), ca_before);
        assert_ne!(std::fs::read(dir.path().join(NODE_CERT_FILE)).expect("node"), node_before);
    }

    #[test]
    fn half_a_ca_is_refused() {
        install_crypto_provider();
        let dir = tempfile::tempdir().expect("tempdir");
        write_cluster_certs(dir.path(), &hosts(&["localhost"])).expect("certs");
        std::fs::remove_file(dir.path().join(CA_KEY_FILE)).expect("rm");
        let err = write_cluster_certs(dir.path(), &hosts(&["localhost"])).expect_err("half ca");
        assert!(err.to_string().contains(CA_KEY_FILE), "{err}");
    }

    #[test]
    fn a_ca_key_that_does_not_match_is_refused() {
        install_crypto_provider();
        let dir = tempfile::tempdir().expect("tempdir");
        write_cluster_certs(dir.path(), &hosts(&["localhost"])).expect("certs");
        let other = KeyPair::generate().expect("key");
        write_file(&dir.path().join(CA_KEY_FILE), other.serialize_pem().as_bytes(), true)
            .expect("write");
        let err = write_named_cert(dir.path(), "client", &[]).expect_err("mismatch");
        assert!(matches!(err, TlsError::UnusableCa { .. }), "{err}");
    }
}
