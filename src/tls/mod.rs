//! TLS for every HTTPS surface of a node, and the clients that talk to them.
//!
//! | where | server side | client side |
//! |---|---|---|
//! | public API (`--api-addr`) | [`TlsMaterial::api_server_config`]: the node certificate; with `--api-client-ca FILE` clients must present a certificate signed by FILE | [`api_client`]: CLI subcommands and tests; trusts `--ca FILE` or nothing (`--insecure`, like `curl -k`) |
//! | Raft port (`--raft-addr`) | [`TlsMaterial::raft_server_config`]: mutual TLS, the peer must present a certificate signed by `--tls-ca` that carries the node role ([`NODE_ROLE_URI`]) | [`TlsMaterial::raft_client`]: trusts only `--tls-ca` and presents the node certificate |
//!
//! One certificate serves both sides of mutual TLS: `raftq certs` issues node
//! certificates with both the server-auth and client-auth extended key usages,
//! SANs that cover every host of the cluster (like the seed's shared
//! `connector.pem`), and the node role. API client certificates (`raftq certs
//! --client`) come from the same CA with the client role; the role is what
//! keeps them off the Raft port (see [`certs`]). [`TlsMaterial::load`]
//! refuses a certificate that does not chain to the CA as a client
//! certificate or lacks the node role, because peers would refuse it on the
//! Raft port anyway.
//!
//! Without `--tls-cert/--tls-key/--tls-ca`, `serve` falls back to
//! [`TlsMaterial::dev`]: a CA and node certificate generated once into
//! `DATA_DIR/tls/`. Every node that generates its own dev CA trusts only
//! itself, so this is for single-node development only.
//!
//! The crypto provider is `ring` everywhere. rustls configs built here name it
//! explicitly, and reqwest needs it installed as the process default
//! ([`install_crypto_provider`], which the client constructors call).

pub mod certs;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig};

use crate::log_throttle::LogThrottle;

/// URI SAN of a node certificate: the one role the Raft port accepts.
pub const NODE_ROLE_URI: &str = "urn:raftq:role:node";
/// URI SAN of an API client certificate (`raftq certs --client`).
pub const CLIENT_ROLE_URI: &str = "urn:raftq:role:client";

/// At most one log line per this long about Raft-port clients refused for
/// their role: any holder of a CA certificate can cause them at will.
const ROLE_REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// ALPN id of the Raft stream (`raft::frame`) on the Raft port, offered
/// ahead of HTTP there.
pub const RAFT_STREAM_ALPN: &[u8] = b"raftq-raft/1";

/// How long the Raft client waits for a TCP connect to a peer.
const RAFT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long an idle pooled connection to a peer is kept.
const RAFT_POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// HTTP/2 pings on peer connections, and how long an unanswered one may
/// stay unanswered before the connection is closed. Without them a
/// connection whose packets are silently dropped (a partition, a host gone
/// without a RST) keeps carrying every request to that peer, each timing
/// out, until TCP's retransmission backoff gets through: after a healed
/// 10 s partition that took 3-8 s (tests/cluster/netns.rs). A new
/// connection gets through as soon as the network does.
const RAFT_PING_INTERVAL: Duration = Duration::from_secs(1);
const RAFT_PING_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the API client waits for a TCP connect.
const API_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Directory of the development fallback inside `DATA_DIR`.
const DEV_DIR: &str = "tls";

/// Everything that can go wrong while loading, generating or using TLS material.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: std::io::Error },
    #[error("malformed pem in {}: {reason}", path.display())]
    Pem { path: PathBuf, reason: String },
    #[error("no certificate found in {}", path.display())]
    NoCertificate { path: PathBuf },
    #[error("no private key found in {}", path.display())]
    NoPrivateKey { path: PathBuf },
    #[error("private key {} does not match certificate {}: {reason}", key.display(), cert.display())]
    KeyMismatch { key: PathBuf, cert: PathBuf, reason: String },
    #[error("certificate {} is not a valid client certificate signed by ca {}: {reason}", cert.display(), ca.display())]
    NotSignedByCa { cert: PathBuf, ca: PathBuf, reason: String },
    #[error("certificate {} lacks the raftq node role ({NODE_ROLE_URI}), so peers would refuse it on the raft port; issue a node certificate with `raftq certs --out DIR --hosts ...` (the ca in DIR is kept)", cert.display())]
    MissingNodeRole { cert: PathBuf },
    #[error("cannot generate random bytes for {}", path.display())]
    Random { path: PathBuf },
    #[error("no ca in {}: missing {}; run `raftq certs --out {}` first", dir.display(), missing.display(), dir.display())]
    MissingCa { dir: PathBuf, missing: PathBuf },
    #[error("cannot sign with the ca in {}: {reason}", path.display())]
    UnusableCa { path: PathBuf, reason: String },
    #[error("invalid certificate name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error("invalid host {host:?}: {reason}")]
    InvalidHost { host: String, reason: String },
    #[error("at least one host is required for a node certificate")]
    NoHosts,
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("tls configuration: {0}")]
    Config(#[from] rustls::Error),
    #[error("client certificate verifier: {0}")]
    Verifier(String),
    /// reqwest's error, flattened to text so callers can build one too.
    #[error("building http client: {0}")]
    Client(String),
    #[error("no way to verify the server: pass --ca FILE (the cluster ca.pem) or --insecure")]
    NoTrustRoot,
}

/// Install the ring `CryptoProvider` as the process default.
///
/// Idempotent: a provider that is already installed (by an earlier call or
/// by anyone else) is left in place.
pub fn install_crypto_provider() {
    // `Err` only means a default already exists, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The provider for configs built here: the process default when there is
/// one, else ring. Never panics, unlike `ServerConfig::builder()`.
fn crypto_provider() -> Arc<CryptoProvider> {
    CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()))
}

/// A node's certificate chain, private key and trusted CA, as PEM and parsed.
#[derive(Clone)]
pub struct TlsMaterial {
    /// The CA that signed every node certificate (the Raft trust root).
    pub ca_pem: Vec<u8>,
    /// This node's certificate chain, leaf first.
    pub cert_pem: Vec<u8>,
    /// This node's private key.
    pub key_pem: Vec<u8>,
    /// `ca_pem` parsed; at least one certificate.
    pub ca_certs: Vec<CertificateDer<'static>>,
    /// `cert_pem` parsed; at least one certificate, leaf first.
    pub cert_chain: Vec<CertificateDer<'static>>,
    /// `key_pem` parsed. Shared because `PrivateKeyDer` is not `Clone`.
    key: Arc<PrivateKeyDer<'static>>,
}

impl fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("ca_certs", &self.ca_certs.len())
            .field("cert_chain", &self.cert_chain.len())
            .field("key", &"<redacted>")
            .finish()
    }
}

impl TlsMaterial {
    /// Load and validate PEM files: the certificate chain, its private key
    /// and the CA.
    ///
    /// Checks that each file parses, that the key matches the leaf
    /// certificate, and that the chain verifies against the CA as a client
    /// certificate (what peers check on the Raft port). Every error names the
    /// offending file.
    pub fn load(cert: &Path, key: &Path, ca: &Path) -> Result<Self, TlsError> {
        let cert_pem = read_file(cert)?;
        let key_pem = read_file(key)?;
        let ca_pem = read_file(ca)?;
        Self::from_pem(ca_pem, cert_pem, key_pem, [ca, cert, key])
    }

    /// Validate PEM buffers; `paths` (`[ca, cert, key]`) only label errors.
    fn from_pem(
        ca_pem: Vec<u8>,
        cert_pem: Vec<u8>,
        key_pem: Vec<u8>,
        [ca_path, cert_path, key_path]: [&Path; 3],
    ) -> Result<Self, TlsError> {
        let ca_certs = parse_certs(&ca_pem, ca_path)?;
        let cert_chain = parse_certs(&cert_pem, cert_path)?;
        let key = parse_key(&key_pem, key_path)?;

        rustls::sign::CertifiedKey::from_der(
            cert_chain.clone(),
            key.clone_key(),
            &crypto_provider(),
        )
        .map_err(|err| TlsError::KeyMismatch {
            key: key_path.to_path_buf(),
            cert: cert_path.to_path_buf(),
            reason: err.to_string(),
        })?;
        verify_client_chain(&cert_chain, &ca_certs).map_err(|reason| TlsError::NotSignedByCa {
            cert: cert_path.to_path_buf(),
            ca: ca_path.to_path_buf(),
            reason,
        })?;
        if !cert_chain.first().is_some_and(|leaf| has_role(leaf, NODE_ROLE_URI)) {
            return Err(TlsError::MissingNodeRole { cert: cert_path.to_path_buf() });
        }

        Ok(Self { ca_pem, cert_pem, key_pem, ca_certs, cert_chain, key: Arc::new(key) })
    }

    /// Development fallback: load `DATA_DIR/tls/{ca.pem,node.pem,node-key.pem}`,
    /// creating them first when they are missing, the node certificate no
    /// longer covers `hosts`, `localhost` and `127.0.0.1`, or it predates
    /// certificate roles (a data dir from an older release).
    ///
    /// An existing dev CA (`ca.pem` + `ca-key.pem`) is kept, so a node
    /// certificate re-issued for a new advertise host stays trusted.
    pub fn dev(data_dir: &Path, hosts: &[String]) -> Result<Self, TlsError> {
        let dir = data_dir.join(DEV_DIR);
        let ca = dir.join(certs::CA_CERT_FILE);
        let cert = dir.join(certs::NODE_CERT_FILE);
        let key = dir.join(certs::NODE_KEY_FILE);
        tracing::warn!(
            dir = %dir.display(),
            "no --tls-cert/--tls-key/--tls-ca given: using a self-signed development CA; \
             this is for single-node development only (other nodes will not trust it)"
        );

        let mut all_hosts: Vec<String> = hosts.to_vec();
        all_hosts.extend(["localhost".to_owned(), "127.0.0.1".to_owned()]);
        let all_hosts = certs::normalize_hosts(&all_hosts);

        if ca.exists() && cert.exists() && key.exists() {
            match Self::load(&cert, &key, &ca) {
                Ok(material) if material.covers_hosts(&all_hosts) => return Ok(material),
                Ok(_) => tracing::info!(
                    dir = %dir.display(),
                    "development certificate does not cover every host; issuing a new one"
                ),
                Err(TlsError::MissingNodeRole { .. }) => tracing::info!(
                    dir = %dir.display(),
                    "development certificate predates certificate roles; issuing a new one"
                ),
                Err(err) => tracing::warn!(
                    dir = %dir.display(),
                    error = %err,
                    "development certificate unusable; issuing a new one"
                ),
            }
        }
        certs::write_cluster_certs(&dir, &all_hosts)?;
        Self::load(&cert, &key, &ca)
    }

    /// Whether the leaf certificate verifies as a server certificate for
    /// every host that is a valid TLS server name.
    fn covers_hosts(&self, hosts: &[String]) -> bool {
        let Some((leaf, intermediates)) = self.cert_chain.split_first() else {
            return false;
        };
        let mut roots = RootCertStore::empty();
        roots.add_parsable_certificates(self.ca_certs.iter().cloned());
        let Ok(verifier) = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            crypto_provider(),
        )
        .build() else {
            return false;
        };
        hosts.iter().all(|host| match ServerName::try_from(host.as_str()) {
            Ok(name) => verifier
                .verify_server_cert(leaf, intermediates, &name, &[], UnixTime::now())
                .is_ok(),
            // Not expressible as a TLS server name: nothing a client could check.
            Err(_) => true,
        })
    }

    /// Public API server config: ALPN `h2` + `http/1.1`. When `client_ca` is
    /// `Some`, a client certificate signed by that CA is required.
    pub fn api_server_config(
        &self,
        client_ca: Option<&Path>,
    ) -> Result<Arc<ServerConfig>, TlsError> {
        let builder = ServerConfig::builder_with_provider(crypto_provider())
            .with_safe_default_protocol_versions()?;
        let config = match client_ca {
            Some(path) => {
                let ca_certs = parse_certs(&read_file(path)?, path)?;
                builder
                    .with_client_cert_verifier(client_verifier(&ca_certs)?)
                    .with_single_cert(self.cert_chain.clone(), self.key.clone_key())?
            }
            None => builder
                .with_no_client_auth()
                .with_single_cert(self.cert_chain.clone(), self.key.clone_key())?,
        };
        Ok(Arc::new(with_alpn(config)))
    }

    /// Raft port server config: a client certificate signed by our CA and
    /// carrying the node role is required; ALPN [`RAFT_STREAM_ALPN`] when
    /// `stream` (a node that does not serve the stream must not agree to
    /// it), then `h2` + `http/1.1`.
    pub fn raft_server_config(&self, stream: bool) -> Result<Arc<ServerConfig>, TlsError> {
        let verifier = Arc::new(NodeRoleVerifier {
            chain: client_verifier(&self.ca_certs)?,
            refusals: LogThrottle::new(ROLE_REFUSAL_LOG_INTERVAL),
        });
        let config = ServerConfig::builder_with_provider(crypto_provider())
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.cert_chain.clone(), self.key.clone_key())?;
        let mut config = with_alpn(config);
        if stream {
            config.alpn_protocols.insert(0, RAFT_STREAM_ALPN.to_vec());
        }
        Ok(Arc::new(config))
    }

    /// The Raft stream's client config: trusts only our CA, presents our
    /// certificate, offers [`RAFT_STREAM_ALPN`] and then `h2`, so that a peer
    /// of an older build that lacks the stream negotiates `h2` (and the
    /// sender falls back to HTTPS) instead of failing the handshake.
    pub fn raft_stream_client_config(&self) -> Result<Arc<rustls::ClientConfig>, TlsError> {
        let mut config = rustls::ClientConfig::builder_with_provider(crypto_provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(ca_roots(&self.ca_certs)?)
            .with_client_auth_cert(self.cert_chain.clone(), self.key.clone_key())?;
        config.alpn_protocols = vec![RAFT_STREAM_ALPN.to_vec(), b"h2".to_vec()];
        Ok(Arc::new(config))
    }

    /// Node-to-node HTTPS client: trusts only our CA, presents our
    /// certificate, never follows redirects and never uses a proxy.
    ///
    /// Installs the ring provider as process default if none is (reqwest
    /// panics without one).
    pub fn raft_client(&self) -> Result<reqwest::Client, TlsError> {
        install_crypto_provider();
        reqwest::Client::builder()
            .tls_certs_only(reqwest_certs(&self.ca_certs)?)
            .identity(reqwest_identity(&self.cert_chain, &self.key)?)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(RAFT_CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .pool_idle_timeout(RAFT_POOL_IDLE_TIMEOUT)
            .http2_keep_alive_interval(RAFT_PING_INTERVAL)
            .http2_keep_alive_timeout(RAFT_PING_TIMEOUT)
            .http2_keep_alive_while_idle(true)
            .build()
            .map_err(client_err)
    }
}

/// HTTPS client for the public API, used by the CLI subcommands and tests.
///
/// Trusts only `ca` when given. With `insecure` any server certificate is
/// accepted (like `curl -k`). One of the two is required: system roots would
/// not know a cluster's private CA anyway. Redirects are followed (reqwest's
/// default policy: up to 10, 307/308 keep method and body). `identity` is a
/// client certificate and key (PEM paths) for nodes started with
/// `--api-client-ca`.
pub fn api_client(
    ca: Option<&Path>,
    insecure: bool,
    identity: Option<(&Path, &Path)>,
) -> Result<reqwest::Client, TlsError> {
    api_client_builder(ca, insecure, identity)?.build().map_err(client_err)
}

/// [`api_client`] before `build()`, for callers that set more options
/// (their own redirect policy, timeouts, ...).
pub fn api_client_builder(
    ca: Option<&Path>,
    insecure: bool,
    identity: Option<(&Path, &Path)>,
) -> Result<reqwest::ClientBuilder, TlsError> {
    install_crypto_provider();
    let mut builder = reqwest::Client::builder().connect_timeout(API_CONNECT_TIMEOUT);
    if insecure {
        builder = builder.tls_danger_accept_invalid_certs(true);
    } else if let Some(path) = ca {
        let ca_certs = parse_certs(&read_file(path)?, path)?;
        builder = builder.tls_certs_only(reqwest_certs(&ca_certs)?);
    } else {
        return Err(TlsError::NoTrustRoot);
    }
    if let Some((cert_path, key_path)) = identity {
        // Parsed here so that a bad file is named in the error.
        let chain = parse_certs(&read_file(cert_path)?, cert_path)?;
        let key = parse_key(&read_file(key_path)?, key_path)?;
        builder = builder.identity(reqwest_identity(&chain, &key)?);
    }
    Ok(builder)
}

/// reqwest's builder errors say only "builder error"; keep the causes.
fn client_err(err: reqwest::Error) -> TlsError {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    TlsError::Client(text)
}

fn read_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { path: path.to_path_buf(), source })
}

/// Every certificate in a PEM buffer; at least one.
fn parse_certs(pem: &[u8], path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| TlsError::Pem { path: path.to_path_buf(), reason: err.to_string() })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { path: path.to_path_buf() });
    }
    Ok(certs)
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) in a PEM buffer.
fn parse_key(pem: &[u8], path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|err| match err {
        rustls::pki_types::pem::Error::NoItemsFound => {
            TlsError::NoPrivateKey { path: path.to_path_buf() }
        }
        err => TlsError::Pem { path: path.to_path_buf(), reason: err.to_string() },
    })
}

/// `ca_certs` as trust roots; every one must be a usable CA certificate.
fn ca_roots(ca_certs: &[CertificateDer<'static>]) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in ca_certs {
        roots
            .add(cert.clone())
            .map_err(|err| TlsError::Verifier(format!("ca certificate rejected: {err}")))?;
    }
    Ok(roots)
}

/// A verifier that requires a client certificate chaining to `ca_certs`.
fn client_verifier(
    ca_certs: &[CertificateDer<'static>],
) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    WebPkiClientVerifier::builder_with_provider(Arc::new(ca_roots(ca_certs)?), crypto_provider())
        .build()
        .map_err(|err| TlsError::Verifier(err.to_string()))
}

/// Whether `cert` names `role` in a URI SAN. A certificate that does not
/// parse has no role.
pub fn has_role(cert: &CertificateDer<'_>, role: &str) -> bool {
    webpki::EndEntityCert::try_from(cert)
        .is_ok_and(|cert| cert.valid_uri_names().any(|u| u == role))
}

/// The Raft port's client verifier: rustls' chain check against the cluster
/// CA, then the node role. The CA alone cannot tell a peer from an API
/// client (both hold one of its certificates); without the role check a
/// client certificate could append entries, vote or force an election.
#[derive(Debug)]
struct NodeRoleVerifier {
    chain: Arc<dyn ClientCertVerifier>,
    refusals: LogThrottle,
}

impl ClientCertVerifier for NodeRoleVerifier {
    fn offer_client_auth(&self) -> bool {
        self.chain.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.chain.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.chain.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // The chain first: only a certificate of our CA gets as far as the
        // role check (and its log line).
        let verified = self.chain.verify_client_cert(end_entity, intermediates, now)?;
        if has_role(end_entity, NODE_ROLE_URI) {
            return Ok(verified);
        }
        if let Some(suppressed) = self.refusals.allow() {
            let roles: Vec<String> = webpki::EndEntityCert::try_from(end_entity)
                .map(|cert| cert.valid_uri_names().map(str::to_owned).collect())
                .unwrap_or_default();
            tracing::warn!(
                ?roles,
                suppressed,
                "refused a raft-port client: its certificate lacks the raftq node role \
                 ({NODE_ROLE_URI}); peers need a node certificate from `raftq certs --out DIR \
                 --hosts ...` (certificates from `raftq certs --client` are for the public api only)"
            );
        }
        Err(rustls::Error::InvalidCertificate(
            rustls::CertificateError::ApplicationVerificationFailure,
        ))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.chain.supported_verify_schemes()
    }

    fn requires_raw_public_keys(&self) -> bool {
        self.chain.requires_raw_public_keys()
    }
}

/// Check `chain` (leaf first) the way a Raft peer will: as a client
/// certificate issued by one of `ca_certs`, valid now.
fn verify_client_chain(
    chain: &[CertificateDer<'static>],
    ca_certs: &[CertificateDer<'static>],
) -> Result<(), String> {
    let (leaf, intermediates) = chain.split_first().ok_or("empty certificate chain")?;
    let verifier = client_verifier(ca_certs).map_err(|err| err.to_string())?;
    verifier
        .verify_client_cert(leaf, intermediates, UnixTime::now())
        .map(|_| ())
        .map_err(|err| err.to_string())
}

fn with_alpn(mut config: ServerConfig) -> ServerConfig {
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config
}

/// Our trust roots in reqwest's form (it re-parses them when building).
fn reqwest_certs(ca_certs: &[CertificateDer<'_>]) -> Result<Vec<reqwest::Certificate>, TlsError> {
    ca_certs.iter().map(|der| reqwest::Certificate::from_der(der).map_err(client_err)).collect()
}

/// Certificate chain and key as one clean PEM buffer for `Identity::from_pem`,
/// which rejects any other section (e.g. openssl's `EC PARAMETERS`).
fn reqwest_identity(
    chain: &[CertificateDer<'_>],
    key: &PrivateKeyDer<'_>,
) -> Result<reqwest::Identity, TlsError> {
    let mut pem = String::new();
    for cert in chain {
        pem.push_str(&pem_encode("CERTIFICATE", cert));
    }
    let key_label = match key {
        PrivateKeyDer::Pkcs1(_) => "RSA PRIVATE KEY",
        PrivateKeyDer::Sec1(_) => "EC PRIVATE KEY",
        _ => "PRIVATE KEY",
    };
    pem.push_str(&pem_encode(key_label, key.secret_der()));
    reqwest::Identity::from_pem(pem.as_bytes()).map_err(client_err)
}

/// RFC 7468 PEM: base64 lines of 64 characters between BEGIN/END labels.
fn pem_encode(label: &str, der: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = Vec::with_capacity(der.len().div_ceil(3) * 4);
    for chunk in der.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &byte)| acc | u32::from(byte) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                b64.push(ALPHABET[(n >> (18 - 6 * i) & 0x3f) as usize]);
            } else {
                b64.push(b'=');
            }
        }
    }
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.chunks(64) {
        // The alphabet is ASCII, so every chunk is valid UTF-8.
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    use certs::{
        write_client_cert, write_cluster_certs, write_named_cert, write_roleless_cert,
        CA_CERT_FILE, NODE_CERT_FILE, NODE_KEY_FILE,
    };

    fn hosts(list: &[&str]) -> Vec<String> {
        list.iter().map(|host| host.to_string()).collect()
    }

    /// A CA and node certificate for 127.0.0.1 in a fresh temp dir.
    fn cluster_dir() -> (tempfile::TempDir, TlsMaterial) {
        let dir = tempfile::tempdir().expect("tempdir");
        write_cluster_certs(dir.path(), &hosts(&["localhost", "127.0.0.1"])).expect("certs");
        let material = load_dir(dir.path());
        (dir, material)
    }

    fn load_dir(dir: &Path) -> TlsMaterial {
        TlsMaterial::load(
            &dir.join(NODE_CERT_FILE),
            &dir.join(NODE_KEY_FILE),
            &dir.join(CA_CERT_FILE),
        )
        .expect("load")
    }

    /// Serve `GET /` -> "ok" over TLS on 127.0.0.1:0.
    fn serve(config: Arc<ServerConfig>) -> (SocketAddr, tokio::task::JoinHandle<()>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        // tokio's `TcpListener::from_std` (inside axum-server) needs this.
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let app = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
        let server = axum_server::from_tcp_rustls(
            listener,
            axum_server::tls_rustls::RustlsConfig::from_config(config),
        )
        .expect("server");
        let task = tokio::spawn(async move {
            let _ = server.serve(app.into_make_service()).await;
        });
        (addr, task)
    }

    async fn get(client: &reqwest::Client, addr: SocketAddr) -> Result<String, reqwest::Error> {
        client
            .get(format!("https://127.0.0.1:{}/", addr.port()))
            .send()
            .await?
            .error_for_status()?
            .text()
            .await
    }

    #[tokio::test]
    async fn raft_port_requires_a_client_certificate_from_our_ca() {
        install_crypto_provider();
        let (dir, material) = cluster_dir();
        let (addr, server) = serve(material.raft_server_config(true).expect("raft config"));

        // A peer with our CA's certificate gets through, over HTTP/2.
        let peer = material.raft_client().expect("raft client");
        let response = peer
            .get(format!("https://127.0.0.1:{}/", addr.port()))
            .send()
            .await
            .expect("mtls request");
        assert_eq!(response.version(), reqwest::Version::HTTP_2);
        assert_eq!(response.text().await.expect("body"), "ok");

        // No client certificate: the handshake (or first read) fails.
        let anonymous =
            api_client(Some(&dir.path().join(CA_CERT_FILE)), false, None).expect("api client");
        assert!(get(&anonymous, addr).await.is_err());

        // A certificate from another CA is refused, and that node's client
        // does not trust our server either.
        let (_other_dir, other) = cluster_dir();
        let stranger = other.raft_client().expect("other client");
        assert!(get(&stranger, addr).await.is_err());

        server.abort();
    }

    /// An API client presenting `DIR/NAME.pem` and trusting `DIR/ca.pem`.
    fn client_with_identity(dir: &Path, name: &str) -> reqwest::Client {
        let cert = dir.join(format!("{name}.pem"));
        let key = dir.join(format!("{name}-key.pem"));
        api_client(Some(&dir.join(CA_CERT_FILE)), false, Some((&cert, &key))).expect("client")
    }

    #[tokio::test]
    async fn raft_port_requires_the_node_role() {
        install_crypto_provider();
        let (dir, material) = cluster_dir();
        write_client_cert(dir.path(), "app").expect("client cert");
        write_roleless_cert(dir.path(), "legacy", &hosts(&["127.0.0.1"])).expect("legacy cert");
        write_named_cert(dir.path(), "extra-node", &[]).expect("named node cert");
        let ca = dir.path().join(CA_CERT_FILE);
        let (raft, raft_server) = serve(material.raft_server_config(true).expect("raft config"));
        let (api, api_server) = serve(material.api_server_config(Some(&ca)).expect("api config"));

        // Node certificates get through: the cluster's own and one from `--name`.
        assert_eq!(get(&client_with_identity(dir.path(), "node"), raft).await.expect("node"), "ok");
        assert_eq!(
            get(&client_with_identity(dir.path(), "extra-node"), raft).await.expect("named"),
            "ok"
        );
        // Same CA, wrong or no role: refused at the handshake.
        for name in ["app", "legacy"] {
            let refused = get(&client_with_identity(dir.path(), name), raft).await;
            assert!(refused.is_err(), "{name} got through: {refused:?}");
        }
        // The public API under --api-client-ca takes any certificate of the CA.
        for name in ["app", "legacy", "node"] {
            let body = get(&client_with_identity(dir.path(), name), api).await;
            assert_eq!(body.expect(name), "ok", "{name} on the api port");
        }
        // A node certificate of another CA: refused (and, trusting only its
        // own CA, that client does not trust our server either).
        let (other_dir, _) = cluster_dir();
        let stranger = api_client(
            Some(&ca),
            false,
            Some((&other_dir.path().join(NODE_CERT_FILE), &other_dir.path().join(NODE_KEY_FILE))),
        )
        .expect("client");
        assert!(get(&stranger, raft).await.is_err());
        raft_server.abort();
        api_server.abort();
    }

    #[test]
    fn certificates_carry_their_role() {
        install_crypto_provider();
        let (dir, material) = cluster_dir();
        assert!(has_role(&material.cert_chain[0], NODE_ROLE_URI));
        assert!(!has_role(&material.cert_chain[0], CLIENT_ROLE_URI));
        write_client_cert(dir.path(), "app").expect("client cert");
        let app =
            parse_certs(&std::fs::read(dir.path().join("app.pem")).expect("read"), dir.path())
                .expect("parse");
        assert!(has_role(&app[0], CLIENT_ROLE_URI));
        assert!(!has_role(&app[0], NODE_ROLE_URI));
        assert!(!has_role(&CertificateDer::from(vec![0x30, 0x03, 1, 2, 3]), NODE_ROLE_URI));

        // A node is never started on a certificate the raft port would refuse.
        let ca = dir.path().join(CA_CERT_FILE);
        let err =
            TlsMaterial::load(&dir.path().join("app.pem"), &dir.path().join("app-key.pem"), &ca)
                .expect_err("client cert as node cert");
        assert!(matches!(err, TlsError::MissingNodeRole { .. }), "{err}");
        assert!(err.to_string().contains("app.pem") && err.to_string().contains("raftq certs"));
        write_roleless_cert(dir.path(), "legacy", &hosts(&["127.0.0.1"])).expect("legacy");
        let err = TlsMaterial::load(
            &dir.path().join("legacy.pem"),
            &dir.path().join("legacy-key.pem"),
            &ca,
        )
        .expect_err("role-less cert as node cert");
        assert!(matches!(err, TlsError::MissingNodeRole { .. }), "{err}");

        // A client certificate never replaces the node certificate.
        let err = write_client_cert(dir.path(), "node").expect_err("node.pem");
        assert!(matches!(err, TlsError::InvalidName { .. }), "{err}");
        let empty = tempfile::tempdir().expect("tempdir");
        let err = write_client_cert(empty.path(), "app").expect_err("no ca");
        assert!(matches!(err, TlsError::MissingCa { .. }), "{err}");
    }

    #[tokio::test]
    async fn api_port_without_client_ca_accepts_any_client() {
        install_crypto_provider();
        let (dir, material) = cluster_dir();
        let (addr, server) = serve(material.api_server_config(None).expect("api config"));
        let ca = dir.path().join(CA_CERT_FILE);

        let verified = api_client(Some(&ca), false, None).expect("client");
        assert_eq!(get(&verified, addr).await.expect("verified get"), "ok");

        let insecure = api_client(None, true, None).expect("client");
        assert_eq!(get(&insecure, addr).await.expect("insecure get"), "ok");

        // Trusting another CA fails verification of our server.
        let (other_dir, _) = cluster_dir();
        let wrong_ca =
            api_client(Some(&other_dir.path().join(CA_CERT_FILE)), false, None).expect("client");
        assert!(get(&wrong_ca, addr).await.is_err());

        assert!(matches!(api_client(None, false, None), Err(TlsError::NoTrustRoot)));
        server.abort();
    }

    #[tokio::test]
    async fn api_port_with_client_ca_requires_a_client_certificate() {
        install_crypto_provider();
        let (dir, material) = cluster_dir();
        write_named_cert(dir.path(), "client", &[]).expect("client cert");
        let ca = dir.path().join(CA_CERT_FILE);
        let (addr, server) = serve(material.api_server_config(Some(&ca)).expect("api config"));

        let anonymous = api_client(Some(&ca), false, None).expect("client");
        assert!(get(&anonymous, addr).await.is_err());

        let with_identity = api_client(
            Some(&ca),
            false,
            Some((&dir.path().join("client.pem"), &dir.path().join("client-key.pem"))),
        )
        .expect("client");
        assert_eq!(get(&with_identity, addr).await.expect("get"), "ok");
        server.abort();
    }

    #[test]
    fn named_cert_without_a_ca_is_an_error() {
        install_crypto_provider();
        let dir = tempfile::tempdir().expect("tempdir");
        let err =
            write_named_cert(dir.path(), "client", &hosts(&["localhost"])).expect_err("no ca");
        assert!(matches!(err, TlsError::MissingCa { .. }), "{err}");
        assert!(err.to_string().contains(CA_CERT_FILE), "{err}");
    }

    #[test]
    fn malformed_pem_names_the_file() {
        install_crypto_provider();
        let (dir, _) = cluster_dir();
        let cert = dir.path().join(NODE_CERT_FILE);
        let key = dir.path().join(NODE_KEY_FILE);
        let ca = dir.path().join(CA_CERT_FILE);

        let broken = dir.path().join("broken.pem");
        std::fs::write(&broken, "-----BEGIN CERTIFICATE-----\nnot base64 at all!\n")
            .expect("write");
        let err = TlsMaterial::load(&broken, &key, &ca).expect_err("broken cert");
        assert!(matches!(err, TlsError::Pem { .. }), "{err}");
        assert!(err.to_string().contains("broken.pem"), "{err}");

        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "nothing to see here\n").expect("write");
        let err = TlsMaterial::load(&cert, &key, &empty).expect_err("empty ca");
        assert!(matches!(err, TlsError::NoCertificate { .. }), "{err}");
        assert!(err.to_string().contains("empty.pem"), "{err}");
        let err = TlsMaterial::load(&cert, &empty, &ca).expect_err("empty key");
        assert!(matches!(err, TlsError::NoPrivateKey { .. }), "{err}");
        assert!(err.to_string().contains("empty.pem"), "{err}");

        let missing = dir.path().join("missing.pem");
        let err = TlsMaterial::load(&cert, &key, &missing).expect_err("missing");
        assert!(matches!(err, TlsError::Read { .. }), "{err}");
        assert!(err.to_string().contains("missing.pem"), "{err}");

        let err = api_client(Some(&broken), false, None).expect_err("broken ca");
        assert!(err.to_string().contains("broken.pem"), "{err}");
    }

    #[test]
    fn mismatched_key_and_foreign_ca_are_refused() {
        install_crypto_provider();
        let (dir, _) = cluster_dir();
        let (other_dir, _) = cluster_dir();
        let cert = dir.path().join(NODE_CERT_FILE);
        let key = dir.path().join(NODE_KEY_FILE);
        let ca = dir.path().join(CA_CERT_FILE);

        let err = TlsMaterial::load(&cert, &other_dir.path().join(NODE_KEY_FILE), &ca)
            .expect_err("wrong key");
        assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err}");

        let err = TlsMaterial::load(&cert, &key, &other_dir.path().join(CA_CERT_FILE))
            .expect_err("wrong ca");
        assert!(matches!(err, TlsError::NotSignedByCa { .. }), "{err}");
    }

    #[test]
    fn in_memory_generation_loads() {
        install_crypto_provider();
        let (ca, _ca_key, cert, key) =
            certs::generate_ca_and_node(&hosts(&["node1", "10.0.0.1"])).expect("generate");
        let material = TlsMaterial::from_pem(
            ca.into_bytes(),
            cert.into_bytes(),
            key.into_bytes(),
            [Path::new("ca"), Path::new("cert"), Path::new("key")],
        )
        .expect("valid");
        assert!(material.covers_hosts(&hosts(&["node1", "10.0.0.1"])));
        assert!(!material.covers_hosts(&hosts(&["node2"])));
        material.raft_server_config(true).expect("raft config");
        material.raft_client().expect("raft client");
    }

    #[test]
    fn dev_material_is_created_once_and_follows_new_hosts() {
        install_crypto_provider();
        let dir = tempfile::tempdir().expect("tempdir");
        let first = TlsMaterial::dev(dir.path(), &hosts(&["node-a"])).expect("dev");
        assert!(first.covers_hosts(&hosts(&["node-a", "localhost", "127.0.0.1"])));

        let again = TlsMaterial::dev(dir.path(), &hosts(&["node-a"])).expect("dev again");
        assert_eq!(again.cert_pem, first.cert_pem);

        let moved = TlsMaterial::dev(dir.path(), &hosts(&["10.9.8.7"])).expect("dev moved");
        assert_eq!(moved.ca_pem, first.ca_pem);
        assert_ne!(moved.cert_pem, first.cert_pem);
        assert!(moved.covers_hosts(&hosts(&["10.9.8.7", "localhost", "127.0.0.1"])));
    }

    #[test]
    fn dev_material_without_the_node_role_is_reissued() {
        install_crypto_provider();
        let dir = tempfile::tempdir().expect("tempdir");
        let first = TlsMaterial::dev(dir.path(), &hosts(&["node-a"])).expect("dev");
        // What an older release left in the data dir: same CA, no role.
        let tls_dir = dir.path().join(DEV_DIR);
        write_roleless_cert(&tls_dir, "node", &hosts(&["node-a", "localhost", "127.0.0.1"]))
            .expect("legacy node cert");
        let legacy = std::fs::read(tls_dir.join(NODE_CERT_FILE)).expect("read");
        let again = TlsMaterial::dev(dir.path(), &hosts(&["node-a"])).expect("dev again");
        assert_eq!(again.ca_pem, first.ca_pem, "the dev CA is kept");
        assert_ne!(again.cert_pem, legacy, "the role-less certificate is replaced");
        assert!(has_role(&again.cert_chain[0], NODE_ROLE_URI));
    }

    #[test]
    fn pem_encoding_round_trips() {
        for len in 0..8 {
            let der: Vec<u8> = (0..len * 25).map(|i| (i * 7 % 256) as u8).collect();
            let pem = pem_encode("CERTIFICATE", &der);
            let parsed = CertificateDer::from_pem_slice(pem.as_bytes()).expect("parse");
            assert_eq!(parsed.as_ref(), der.as_slice());
        }
    }
}
