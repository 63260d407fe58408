//! TCP and TLS transport for the link: outgoing connections (edge), the listener side (hub),
//! PEM loading, and reconnect back-off.
//!
//! - [`connect`] resolves `host:port` on every call (a hub pod that came back on a new IP is
//!   found at the next attempt), tries each resolved address in turn within one overall timeout,
//!   sets `TCP_NODELAY` and `SO_KEEPALIVE`, then runs the TLS handshake when asked.
//! - [`bind`] and [`TlsServer::accept`] are the hub side.
//! - [`LinkStream`] is the connected stream (plain, TLS client or TLS server) the session driver
//!   runs on.
//! - [`Backoff`] is the edge's reconnect delay: exponential with jitter, capped.
//!
//! TLS is rustls with the `ring` provider passed explicitly, so no process-wide default provider
//! is needed. There are no system roots: the CA bundle is always given.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::RootCertStore;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{lookup_host, TcpListener, TcpSocket, TcpStream};
use tokio::time::Instant;
use tracing::debug;

/// Errors of the transport layer. Messages name the address or file concerned and never contain
/// key material.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// DNS resolution of `address` failed.
    #[error("cannot resolve {address}: {source}")]
    Resolve {
        /// The `host:port` being resolved.
        address: String,
        /// The resolver's error.
        #[source]
        source: io::Error,
    },
    /// DNS resolution of `address` returned no addresses.
    #[error("{address} resolved to no addresses")]
    NoAddresses {
        /// The `host:port` resolved.
        address: String,
    },
    /// Every resolved address of `address` failed; `tried` lists each one and why.
    #[error("cannot connect to {address}: {}", fmt_tried(tried))]
    Connect {
        /// The `host:port` connected to.
        address: String,
        /// Each resolved address tried, with the reason it failed.
        tried: Vec<(SocketAddr, String)>,
    },
    /// The operation on `address` (resolution, connection or TLS handshake) did not finish in
    /// time.
    #[error("{address}: timed out after {after:?}")]
    Timeout {
        /// The `host:port` (connect) or peer address (accept) concerned.
        address: String,
        /// The timeout that elapsed.
        after: Duration,
    },
    /// The TLS handshake with `peer` failed (I/O error or TLS alert, e.g. unknown CA, missing
    /// client certificate, name mismatch).
    #[error("TLS handshake with {peer} failed: {source}")]
    Tls {
        /// The `host:port` (connect) or peer address (accept).
        peer: String,
        /// The handshake error (wraps the `rustls::Error` when there is one).
        #[source]
        source: io::Error,
    },
    /// A TLS configuration could not be built from the given material.
    #[error("TLS configuration ({what}): {source}")]
    TlsConfig {
        /// What was being configured (e.g. "client certificate", "server certificate").
        what: &'static str,
        /// The rustls error.
        #[source]
        source: rustls::Error,
    },
    /// A PEM file could not be read or lacked what it should hold.
    #[error("{what}: {reason}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What the file was for (e.g. "CA bundle", "client key").
        what: &'static str,
        /// What was wrong, naming the path (e.g. "no certificate in /x.pem").
        reason: String,
    },
    /// An address (or server name) is malformed.
    #[error("bad address {value:?}: expected {expected}")]
    BadAddress {
        /// The value given.
        value: String,
        /// What was expected.
        expected: &'static str,
    },
    /// Binding a listener failed.
    #[error("cannot bind {addr}: {source}")]
    Bind {
        /// The address to bind.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

fn fmt_tried(tried: &[(SocketAddr, String)]) -> String {
    if tried.is_empty() {
        return "no address tried".to_owned();
    }
    tried
        .iter()
        .map(|(addr, why)| format!("{addr}: {why}"))
        .collect::<Vec<_>>()
        .join("; ")
}

// ---------------------------------------------------------------------------------------------
// Back-off
// ---------------------------------------------------------------------------------------------

/// Exponential back-off with jitter: the base delay starts at `initial`, doubles after each
/// [`next_delay`](Backoff::next_delay) and is capped at `max`; each returned delay is the base
/// multiplied by a random factor in `[1 - jitter, 1 + jitter]`, still capped at `max`.
///
/// Deterministic with [`with_seed`](Backoff::with_seed) (tests); seeded from the clock by
/// default. The PRNG is splitmix64 (no dependency). Never panics: `jitter` is clamped to
/// `[0, 1]` (NaN counts as 0) and `initial` to at most `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    jitter: f64,
    current: Duration,
    attempts: u32,
    rng: u64,
}

impl Backoff {
    /// A back-off starting at `initial`, doubling up to `max`, with relative `jitter`
    /// (0.0 = none, 0.2 = ±20 %). The link default is 1 s doubling to 30 s (link protocol §7).
    pub fn new(initial: Duration, max: Duration, jitter: f64) -> Self {
        let initial = initial.min(max);
        let jitter = if jitter.is_nan() {
            0.0
        } else {
            jitter.clamp(0.0, 1.0)
        };
        Self {
            initial,
            max,
            jitter,
            current: initial,
            attempts: 0,
            rng: clock_seed(),
        }
    }

    /// The same back-off with a fixed PRNG seed: the delay sequence is reproducible.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.rng = seed;
        self
    }

    /// The delay before the next attempt; doubles the base for the one after.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.current;
        self.current = base.saturating_mul(2).min(self.max);
        self.attempts = self.attempts.saturating_add(1);
        if self.jitter == 0.0 {
            return base;
        }
        let factor = 1.0 - self.jitter + 2.0 * self.jitter * self.next_unit();
        let secs = (base.as_secs_f64() * factor).min(self.max.as_secs_f64());
        Duration::try_from_secs_f64(secs)
            .unwrap_or(self.max)
            .min(self.max)
    }

    /// Back to `initial` (after a link that came up and worked).
    pub fn reset(&mut self) {
        self.current = self.initial;
        self.attempts = 0;
    }

    /// How many delays were handed out since creation or the last [`reset`](Backoff::reset).
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// splitmix64 step.
    fn next_u64(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1]`.
    fn next_unit(&mut self) -> f64 {
        // 53 random bits over 2^53 - 1: both ends reachable.
        (self.next_u64() >> 11) as f64 / ((1u64 << 53) - 1) as f64
    }
}

/// A seed from the clock, mixed with a process-wide counter so back-offs created in the same
/// instant differ.
fn clock_seed() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    nanos
        ^ COUNTER
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0xD1B5_4A32_D192_ED03)
}

// ---------------------------------------------------------------------------------------------
// Addresses
// ---------------------------------------------------------------------------------------------

const HOST_PORT: &str = "host:port, IPv4:port or [IPv6]:port with a port in 1..=65535";

/// Splits `"host:port"`, `"1.2.3.4:port"` or `"[v6]:port"` into host (without brackets) and
/// port. The error names the value.
pub fn split_host_port(address: &str) -> Result<(String, u16), TransportError> {
    let bad = || TransportError::BadAddress {
        value: address.to_owned(),
        expected: HOST_PORT,
    };
    let (host, port) = if let Some(rest) = address.strip_prefix('[') {
        let (inner, port) = rest.split_once("]:").ok_or_else(bad)?;
        inner.parse::<Ipv6Addr>().map_err(|_| bad())?;
        (inner, port)
    } else {
        let (host, port) = address.rsplit_once(':').ok_or_else(bad)?;
        let valid = !host.is_empty()
            && !host.contains(':')
            && !host
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '[' | ']' | '/' | '@'));
        if !valid {
            return Err(bad());
        }
        (host, port)
    };
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let port: u16 = port.parse().map_err(|_| bad())?;
    if port == 0 {
        return Err(bad());
    }
    Ok((host.to_owned(), port))
}

/// Whether `host` is an IP literal (used for logging and server names).
fn is_ip_literal(host: &str) -> bool {
    host.parse::<IpAddr>().is_ok()
}

// ---------------------------------------------------------------------------------------------
// Streams
// ---------------------------------------------------------------------------------------------

/// A connected link stream: plain TCP, or TLS as client (edge) or server (hub).
///
/// Implements [`AsyncRead`] and [`AsyncWrite`] by delegating to the variant.
pub enum LinkStream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS, client side (edge).
    TlsClient(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    /// TLS, server side (hub).
    TlsServer(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl LinkStream {
    /// The remote address of the underlying TCP connection (`None` if the OS cannot tell, e.g.
    /// after a reset).
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.tcp().peer_addr().ok()
    }

    /// The local address of the underlying TCP connection.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.tcp().local_addr().ok()
    }

    /// Whether the stream is TLS.
    pub fn is_tls(&self) -> bool {
        !matches!(self, LinkStream::Plain(_))
    }

    /// The certificate chain the peer presented (TLS only; the end-entity certificate first).
    /// On the hub with client certificates required, this is the verified edge identity.
    pub fn peer_certificates(&self) -> Option<Vec<CertificateDer<'static>>> {
        let certs = match self {
            LinkStream::Plain(_) => return None,
            LinkStream::TlsClient(s) => s.get_ref().1.peer_certificates(),
            LinkStream::TlsServer(s) => s.get_ref().1.peer_certificates(),
        };
        certs.map(|c| c.iter().map(|d| d.clone().into_owned()).collect())
    }

    fn tcp(&self) -> &TcpStream {
        match self {
            LinkStream::Plain(s) => s,
            LinkStream::TlsClient(s) => s.get_ref().0,
            LinkStream::TlsServer(s) => s.get_ref().0,
        }
    }
}

impl fmt::Debug for LinkStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self {
            LinkStream::Plain(_) => "Plain",
            LinkStream::TlsClient(_) => "TlsClient",
            LinkStream::TlsServer(_) => "TlsServer",
        };
        f.debug_struct("LinkStream")
            .field("kind", &kind)
            .field("peer", &self.peer_addr())
            .finish()
    }
}

impl AsyncRead for LinkStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            LinkStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            LinkStream::TlsClient(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            LinkStream::TlsServer(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for LinkStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            LinkStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            LinkStream::TlsClient(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            LinkStream::TlsServer(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            LinkStream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            LinkStream::TlsClient(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
            LinkStream::TlsServer(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            LinkStream::Plain(s) => s.is_write_vectored(),
            LinkStream::TlsClient(s) => s.is_write_vectored(),
            LinkStream::TlsServer(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            LinkStream::Plain(s) => Pin::new(s).poll_flush(cx),
            LinkStream::TlsClient(s) => Pin::new(s.as_mut()).poll_flush(cx),
            LinkStream::TlsServer(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            LinkStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            LinkStream::TlsClient(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            LinkStream::TlsServer(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// PEM loading
// ---------------------------------------------------------------------------------------------

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn pem_error(path: &Path, what: &'static str, reason: String) -> TransportError {
    TransportError::Pem {
        path: path.to_owned(),
        what,
        reason,
    }
}

fn read_pem_file(path: &Path, what: &'static str) -> Result<Vec<u8>, TransportError> {
    std::fs::read(path)
        .map_err(|e| pem_error(path, what, format!("cannot read {}: {e}", path.display())))
}

/// All certificates in a PEM file; an error if there is none.
fn load_certs(
    path: &Path,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TransportError> {
    let bytes = read_pem_file(path, what)?;
    let certs = rustls_pemfile::certs(&mut bytes.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            pem_error(
                path,
                what,
                format!("malformed PEM in {}: {e}", path.display()),
            )
        })?;
    if certs.is_empty() {
        return Err(pem_error(
            path,
            what,
            format!("no certificate in {}", path.display()),
        ));
    }
    Ok(certs)
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) in a PEM file.
fn load_key(path: &Path, what: &'static str) -> Result<PrivateKeyDer<'static>, TransportError> {
    let bytes = read_pem_file(path, what)?;
    // The PEM parser's errors describe structure, never the key bytes.
    match rustls_pemfile::private_key(&mut bytes.as_slice()) {
        Ok(Some(key)) => Ok(key),
        Ok(None) => Err(pem_error(
            path,
            what,
            format!("no private key in {}", path.display()),
        )),
        Err(e) => Err(pem_error(
            path,
            what,
            format!("malformed PEM in {}: {e}", path.display()),
        )),
    }
}

/// A root store holding every certificate of a CA bundle.
fn load_roots(path: &Path, what: &'static str) -> Result<RootCertStore, TransportError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path, what)? {
        roots.add(cert).map_err(|e| {
            pem_error(
                path,
                what,
                format!("unusable CA certificate in {}: {e}", path.display()),
            )
        })?;
    }
    Ok(roots)
}

fn tls_config_error(what: &'static str) -> impl FnOnce(rustls::Error) -> TransportError {
    move |source| TransportError::TlsConfig { what, source }
}

// ---------------------------------------------------------------------------------------------
// TLS client and server
// ---------------------------------------------------------------------------------------------

/// TLS client settings (edge side): trusted CAs, optional client certificate (mutual TLS), and
/// an optional server name override.
#[derive(Clone)]
pub struct TlsClient {
    config: Arc<rustls::ClientConfig>,
    server_name: Option<String>,
}

impl fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsClient")
            .field(
                "client_auth",
                &self.config.client_auth_cert_resolver.has_certs(),
            )
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl TlsClient {
    /// Loads the CA bundle `ca_file` (required: there are no system roots), the optional client
    /// certificate chain and key `(cert_file, key_file)` for mutual TLS, and keeps
    /// `server_name` (`None`: the host part of the address passed to [`connect`]; an IP address
    /// host becomes an IP server name, checked against the certificate's IP SANs).
    pub fn from_pem_files(
        ca_file: &Path,
        client_cert: Option<(&Path, &Path)>,
        server_name: Option<String>,
    ) -> Result<Self, TransportError> {
        if let Some(name) = &server_name {
            server_name_of(name)?;
        }
        let roots = load_roots(ca_file, "CA bundle")?;
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(tls_config_error("protocol versions"))?
            .with_root_certificates(roots);
        let config = match client_cert {
            Some((cert_file, key_file)) => {
                let certs = load_certs(cert_file, "client certificate")?;
                let key = load_key(key_file, "client key")?;
                builder
                    .with_client_auth_cert(certs, key)
                    .map_err(tls_config_error("client certificate"))?
            }
            None => builder.with_no_client_auth(),
        };
        Ok(Self::from_config(Arc::new(config), server_name))
    }

    /// Wraps a ready rustls configuration (tests, custom verifiers).
    pub fn from_config(config: Arc<rustls::ClientConfig>, server_name: Option<String>) -> Self {
        Self {
            config,
            server_name,
        }
    }

    /// The server name override, if any.
    pub fn server_name(&self) -> Option<&str> {
        self.server_name.as_deref()
    }
}

/// A TLS server name from a host or override: DNS name or IP address.
fn server_name_of(name: &str) -> Result<ServerName<'static>, TransportError> {
    ServerName::try_from(name.to_owned()).map_err(|_| TransportError::BadAddress {
        value: name.to_owned(),
        expected: "a DNS name or IP address usable as TLS server name",
    })
}

/// TLS server settings (hub side): certificate chain and key, and optionally the CA that client
/// certificates must chain to.
#[derive(Clone)]
pub struct TlsServer {
    acceptor: tokio_rustls::TlsAcceptor,
}

impl fmt::Debug for TlsServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsServer").finish_non_exhaustive()
    }
}

impl TlsServer {
    /// Loads the server certificate chain `cert_file` and key `key_file`. With `client_ca`,
    /// client certificates are REQUIRED and must chain to a CA in that bundle (mutual TLS);
    /// without, clients are not asked for one.
    pub fn from_pem_files(
        cert_file: &Path,
        key_file: &Path,
        client_ca: Option<&Path>,
    ) -> Result<Self, TransportError> {
        let certs = load_certs(cert_file, "server certificate")?;
        let key = load_key(key_file, "server key")?;
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(tls_config_error("protocol versions"))?;
        let builder = match client_ca {
            Some(ca_file) => {
                let roots = load_roots(ca_file, "client CA bundle")?;
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider(),
                )
                .build()
                .map_err(|e| TransportError::TlsConfig {
                    what: "client certificate verifier",
                    source: rustls::Error::General(e.to_string()),
                })?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let config = builder
            .with_single_cert(certs, key)
            .map_err(tls_config_error("server certificate"))?;
        Ok(Self::from_config(Arc::new(config)))
    }

    /// Wraps a ready rustls configuration (tests, custom verifiers).
    pub fn from_config(config: Arc<rustls::ServerConfig>) -> Self {
        Self {
            acceptor: tokio_rustls::TlsAcceptor::from(config),
        }
    }

    /// Runs the server side of the TLS handshake on an accepted connection, within `timeout`.
    pub async fn accept(
        &self,
        tcp: TcpStream,
        timeout: Duration,
    ) -> Result<LinkStream, TransportError> {
        let peer = tcp
            .peer_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| "unknown peer".to_owned());
        match tokio::time::timeout(timeout, self.acceptor.accept(tcp)).await {
            Ok(Ok(stream)) => {
                debug!(%peer, "TLS handshake accepted");
                Ok(LinkStream::TlsServer(Box::new(stream)))
            }
            Ok(Err(source)) => {
                debug!(%peer, error = %source, "TLS handshake failed");
                Err(TransportError::Tls { peer, source })
            }
            Err(_) => Err(TransportError::Timeout {
                address: peer,
                after: timeout,
            }),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Connect and bind
// ---------------------------------------------------------------------------------------------

/// Connects to `address` (`host:port`, resolved now), then runs the TLS handshake when `tls` is
/// given; all within `timeout` overall.
///
/// Each resolved address is tried in turn; an address gets an equal share of the time left
/// (the last one all of it), so one black-holed address cannot starve the rest. The stream has
/// `TCP_NODELAY` and `SO_KEEPALIVE` set (OS default keepalive timing; the session's heartbeats
/// detect dead links sooner).
///
/// With TLS 1.3 and a server requiring client certificates, a rejected client certificate
/// shows up on the first read, not here.
pub async fn connect(
    address: &str,
    tls: Option<&TlsClient>,
    timeout: Duration,
) -> Result<LinkStream, TransportError> {
    let (host, port) = split_host_port(address)?;
    let server_name = match tls {
        Some(t) => Some(server_name_of(t.server_name().unwrap_or(&host))?),
        None => None,
    };
    let deadline = deadline_after(timeout);
    let timed_out = || TransportError::Timeout {
        address: address.to_owned(),
        after: timeout,
    };

    let addrs: Vec<SocketAddr> =
        match tokio::time::timeout_at(deadline, lookup_host((host.as_str(), port))).await {
            Ok(Ok(addrs)) => addrs.collect(),
            Ok(Err(source)) => {
                debug!(%address, error = %source, "resolution failed");
                return Err(TransportError::Resolve {
                    address: address.to_owned(),
                    source,
                });
            }
            Err(_) => return Err(timed_out()),
        };
    if addrs.is_empty() {
        return Err(TransportError::NoAddresses {
            address: address.to_owned(),
        });
    }
    debug!(%address, resolved = ?addrs, ip_literal = is_ip_literal(&host), "resolved");

    let tcp = connect_any(address, &addrs, deadline, timeout).await?;

    let (Some(tls), Some(server_name)) = (tls, server_name) else {
        return Ok(LinkStream::Plain(tcp));
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::clone(&tls.config));
    match tokio::time::timeout_at(deadline, connector.connect(server_name, tcp)).await {
        Ok(Ok(stream)) => {
            debug!(%address, "TLS handshake done");
            Ok(LinkStream::TlsClient(Box::new(stream)))
        }
        Ok(Err(source)) => {
            debug!(%address, error = %source, "TLS handshake failed");
            Err(TransportError::Tls {
                peer: address.to_owned(),
                source,
            })
        }
        Err(_) => Err(timed_out()),
    }
}

/// Tries `addrs` in turn until one connects, before `deadline`; each address gets an equal share
/// of the time left. `Timeout` (naming `timeout`) when no address answered at all, `Connect`
/// with every reason otherwise.
async fn connect_any(
    address: &str,
    addrs: &[SocketAddr],
    deadline: Instant,
    timeout: Duration,
) -> Result<TcpStream, TransportError> {
    let mut tried = Vec::with_capacity(addrs.len());
    // Whether any address answered (refused, unreachable...) rather than timing out.
    let mut any_answered = false;
    for (i, addr) in addrs.iter().copied().enumerate() {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            tried.push((addr, "not tried: out of time".to_owned()));
            continue;
        }
        let left = u32::try_from(addrs.len() - i).unwrap_or(u32::MAX);
        let budget = remaining / left;
        debug!(%address, %addr, ?budget, "connecting");
        match tokio::time::timeout(budget, connect_tcp(addr)).await {
            Ok(Ok(stream)) => return Ok(stream),
            Ok(Err(e)) => {
                debug!(%address, %addr, error = %e, "connect failed");
                any_answered = true;
                tried.push((addr, e.to_string()));
            }
            Err(_) => {
                debug!(%address, %addr, ?budget, "connect timed out");
                tried.push((addr, format!("timed out after {budget:?}")));
            }
        }
    }
    Err(if any_answered {
        TransportError::Connect {
            address: address.to_owned(),
            tried,
        }
    } else {
        TransportError::Timeout {
            address: address.to_owned(),
            after: timeout,
        }
    })
}

/// `now + timeout`, or about 30 years ahead when that overflows (an "infinite" timeout).
fn deadline_after(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout)
        .unwrap_or_else(|| now + Duration::from_secs(30 * 365 * 86_400))
}

/// One TCP connection with `TCP_NODELAY` and `SO_KEEPALIVE`.
async fn connect_tcp(addr: SocketAddr) -> io::Result<TcpStream> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_keepalive(true)?;
    socket.set_nodelay(true)?;
    let stream = socket.connect(addr).await?;
    // Set again on the connected stream: harmless, and certain on every platform.
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Binds a listener on `addr` (tokio sets `SO_REUSEADDR` on Unix).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, TransportError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| TransportError::Bind { addr, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_seeded_sequence_is_monotone_bounded_and_reproducible() {
        let initial = Duration::from_millis(100);
        let max = Duration::from_secs(3);
        let jitter = 0.2;
        let mut a = Backoff::new(initial, max, jitter).with_seed(42);
        let mut b = Backoff::new(initial, max, jitter).with_seed(42);
        let mut base = initial;
        let mut prev = Duration::ZERO;
        let mut reached_cap_region = false;
        for i in 0..20 {
            let d = a.next_delay();
            assert_eq!(d, b.next_delay(), "same seed, same sequence");
            assert_eq!(a.attempts(), i + 1);
            let lo = base.mul_f64(1.0 - jitter);
            let hi = base.mul_f64(1.0 + jitter).min(max);
            // 1 µs slack for float rounding.
            assert!(
                d + Duration::from_micros(1) >= lo && d <= hi,
                "delay {i} = {d:?} outside [{lo:?}, {hi:?}] (base {base:?})"
            );
            assert!(d <= max);
            if base < max / 2 {
                // jitter 0.2 < 1/3: doubling dominates, so strictly increasing before the cap.
                assert!(d > prev, "delay {i} = {d:?} not above previous {prev:?}");
            } else {
                reached_cap_region = true;
            }
            prev = d;
            base = (base * 2).min(max);
        }
        assert!(reached_cap_region);
        // Jitter really varies around the cap.
        let capped: Vec<_> = (0..10).map(|_| a.next_delay()).collect();
        assert!(capped
            .iter()
            .all(|d| *d >= max.mul_f64(0.8) - Duration::from_micros(1)));
        assert!(capped.iter().any(|d| *d != capped[0]));

        a.reset();
        assert_eq!(a.attempts(), 0);
        let d = a.next_delay();
        assert!(
            d >= initial.mul_f64(0.8) && d <= initial.mul_f64(1.2),
            "{d:?}"
        );
    }

    #[test]
    fn backoff_different_seeds_differ_and_no_jitter_is_exact() {
        let mut a = Backoff::new(Duration::from_secs(1), Duration::from_secs(30), 0.5).with_seed(1);
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(30), 0.5).with_seed(2);
        let sa: Vec<_> = (0..5).map(|_| a.next_delay()).collect();
        let sb: Vec<_> = (0..5).map(|_| b.next_delay()).collect();
        assert_ne!(sa, sb);

        let mut e = Backoff::new(Duration::from_secs(1), Duration::from_secs(30), 0.0);
        let got: Vec<_> = (0..7).map(|_| e.next_delay().as_secs()).collect();
        assert_eq!(got, [1, 2, 4, 8, 16, 30, 30]);
        e.reset();
        assert_eq!(e.next_delay(), Duration::from_secs(1));
    }

    #[test]
    fn backoff_odd_parameters_do_not_panic() {
        let mut nan = Backoff::new(Duration::from_secs(1), Duration::from_secs(4), f64::NAN);
        assert_eq!(nan.next_delay(), Duration::from_secs(1));
        let mut big =
            Backoff::new(Duration::from_secs(10), Duration::from_secs(2), 7.0).with_seed(3);
        for _ in 0..100 {
            assert!(big.next_delay() <= Duration::from_secs(2));
        }
        let mut huge = Backoff::new(Duration::MAX, Duration::MAX, 1.0).with_seed(9);
        for _ in 0..100 {
            let _ = huge.next_delay();
        }
        let mut zero = Backoff::new(Duration::ZERO, Duration::ZERO, 0.3);
        assert_eq!(zero.next_delay(), Duration::ZERO);
        for _ in 0..40 {
            let _ = zero.next_delay();
        }
        assert_eq!(zero.attempts(), 41);
    }

    #[test]
    fn split_host_port_accepts_names_ipv4_and_bracketed_ipv6() {
        assert_eq!(
            split_host_port("hub.kubeedge.svc.cluster.local:7700").unwrap(),
            ("hub.kubeedge.svc.cluster.local".to_owned(), 7700)
        );
        assert_eq!(
            split_host_port("localhost:1").unwrap(),
            ("localhost".to_owned(), 1)
        );
        assert_eq!(
            split_host_port("10.0.0.7:65535").unwrap(),
            ("10.0.0.7".to_owned(), 65535)
        );
        assert_eq!(
            split_host_port("[::1]:443").unwrap(),
            ("::1".to_owned(), 443)
        );
        assert_eq!(
            split_host_port("[fd00::a:1]:8443").unwrap(),
            ("fd00::a:1".to_owned(), 8443)
        );
    }

    #[test]
    fn split_host_port_rejects_malformed_values_naming_them() {
        for bad in [
            "",
            "host",
            ":80",
            "host:",
            "host:http",
            "host:+80",
            "host:70000",
            "host:0",
            "::1:80",
            "[::1]",
            "[::1]80",
            "[not-v6]:80",
            "[]:80",
            "a b:80",
            "http://host:80",
            "user@host:80",
        ] {
            match split_host_port(bad) {
                Err(e @ TransportError::BadAddress { .. }) => {
                    let msg = e.to_string();
                    assert!(msg.contains(&format!("{bad:?}")), "{msg}");
                }
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
        assert!(!is_ip_literal("localhost"));
        assert!(is_ip_literal("::1"));
    }

    /// The fall-through over several resolved addresses (DNS here gives one per name, so this
    /// feeds the list directly). Loopback sockets only.
    #[tokio::test]
    async fn connect_any_skips_dead_addresses_and_reports_each() {
        let open = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let open_addr = open.local_addr().unwrap();
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let closed_addr = closed.local_addr().unwrap();
        drop(closed);
        let closed2 = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let closed2_addr = closed2.local_addr().unwrap();
        drop(closed2);
        let t = Duration::from_secs(10);

        let stream = connect_any("svc:1", &[closed_addr, open_addr], deadline_after(t), t)
            .await
            .unwrap();
        assert_eq!(stream.peer_addr().unwrap(), open_addr);
        assert!(stream.nodelay().unwrap());
        let (_accepted, from) = open.accept().await.unwrap();
        assert_eq!(Some(from), stream.local_addr().ok());

        let err = connect_any("svc:2", &[closed_addr, closed2_addr], deadline_after(t), t)
            .await
            .unwrap_err();
        match &err {
            TransportError::Connect { address, tried } => {
                assert_eq!(address, "svc:2");
                let order: Vec<_> = tried.iter().map(|(a, _)| *a).collect();
                assert_eq!(order, [closed_addr, closed2_addr]);
            }
            other => panic!("{other:?}"),
        }
        let msg = err.to_string();
        assert!(msg.contains(&closed_addr.to_string()) && msg.contains(&closed2_addr.to_string()));

        // An "infinite" timeout does not overflow.
        let err = connect(&closed_addr.to_string(), None, Duration::MAX)
            .await
            .unwrap_err();
        assert!(matches!(err, TransportError::Connect { .. }), "{err:?}");
    }
}
