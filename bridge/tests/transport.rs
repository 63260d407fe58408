//! `bridge::transport` over real loopback sockets: plain TCP, TLS, mutual TLS, timeouts, PEM
//! errors. Certificates are generated with rcgen into a temporary directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result};
use bridge::transport::{self, LinkStream, TlsClient, TlsServer, TransportError};
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Generous: only reached when something is broken.
const T: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// PKI helpers
// ---------------------------------------------------------------------------------------------

struct Ca {
    cert: Certificate,
    key: KeyPair,
}

fn new_ca(name: &str) -> Result<Ca> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key)?;
    Ok(Ca { cert, key })
}

/// A leaf certificate signed by `ca`, with the given SANs and extended key usage.
fn new_leaf(
    ca: &Ca,
    cn: &str,
    sans: &[&str],
    eku: ExtendedKeyUsagePurpose,
) -> Result<(Certificate, KeyPair)> {
    let key = KeyPair::generate()?;
    let mut params =
        CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())?;
    params.distinguished_name.push(DnType::CommonName, cn);
    params.extended_key_usages = vec![eku];
    let cert = params.signed_by(&key, &ca.cert, &ca.key)?;
    Ok((cert, key))
}

fn write(dir: &Path, name: &str, contents: &str) -> Result<PathBuf> {
    let path = dir.join(name);
    std::fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// A server CA + server cert (SAN localhost, 127.0.0.1), a client CA + client cert, and a
/// second unrelated CA with its own client cert, all as PEM files.
struct Pki {
    _dir: tempfile::TempDir,
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_ca: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
    other_ca: PathBuf,
    other_client_cert: PathBuf,
    other_client_key: PathBuf,
    server_key_pem: String,
    client_cert_der: Vec<u8>,
}

fn pki() -> Result<Pki> {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let ca = new_ca("test server CA")?;
    let (server, server_key) = new_leaf(
        &ca,
        "hub",
        &["localhost", "127.0.0.1"],
        ExtendedKeyUsagePurpose::ServerAuth,
    )?;
    let client_ca = new_ca("test client CA")?;
    let (client, client_key) = new_leaf(
        &client_ca,
        "edge-1",
        &["edge-1"],
        ExtendedKeyUsagePurpose::ClientAuth,
    )?;
    let other_ca = new_ca("unrelated CA")?;
    let (other_client, other_client_key) = new_leaf(
        &other_ca,
        "intruder",
        &["intruder"],
        ExtendedKeyUsagePurpose::ClientAuth,
    )?;
    Ok(Pki {
        ca: write(d, "ca.pem", &ca.cert.pem())?,
        server_cert: write(d, "server.pem", &server.pem())?,
        server_key: write(d, "server-key.pem", &server_key.serialize_pem())?,
        client_ca: write(d, "client-ca.pem", &client_ca.cert.pem())?,
        client_cert: write(d, "client.pem", &client.pem())?,
        client_key: write(d, "client-key.pem", &client_key.serialize_pem())?,
        other_ca: write(d, "other-ca.pem", &other_ca.cert.pem())?,
        other_client_cert: write(d, "other-client.pem", &other_client.pem())?,
        other_client_key: write(d, "other-client-key.pem", &other_client_key.serialize_pem())?,
        server_key_pem: server_key.serialize_pem(),
        client_cert_der: client.der().to_vec(),
        _dir: dir,
    })
}

// ---------------------------------------------------------------------------------------------
// Stream helpers
// ---------------------------------------------------------------------------------------------

async fn listener() -> Result<(TcpListener, SocketAddr)> {
    let l = transport::bind("127.0.0.1:0".parse()?).await?;
    let addr = l.local_addr()?;
    Ok((l, addr))
}

/// Echoes everything read until EOF, then shuts down its write side.
async fn echo(stream: LinkStream) -> Result<()> {
    let (mut r, mut w) = tokio::io::split(stream);
    tokio::io::copy(&mut r, &mut w).await?;
    w.shutdown().await?;
    Ok(())
}

/// Sends a 1 MiB pattern (reading concurrently), shuts down the write side, and checks the
/// echo is identical and followed by EOF.
async fn check_echo(stream: LinkStream) -> Result<()> {
    let payload: Vec<u8> = (0..1_048_576u32).map(|i| (i * 31 % 251) as u8).collect();
    let (mut r, mut w) = tokio::io::split(stream);
    let sent = payload.clone();
    let writer = async move {
        w.write_all(&sent).await?;
        w.flush().await?;
        w.shutdown().await?;
        anyhow::Ok(w)
    };
    let reader = async move {
        let mut got = Vec::new();
        r.read_to_end(&mut got).await?;
        anyhow::Ok(got)
    };
    let (w, got) = tokio::time::timeout(T, async { tokio::try_join!(writer, reader) })
        .await
        .context("echo timed out")??;
    drop(w);
    assert_eq!(got.len(), payload.len());
    assert!(got == payload, "echoed bytes differ");
    Ok(())
}

/// Accepts one plain connection and echoes it.
fn spawn_plain_echo(l: TcpListener) -> tokio::task::JoinHandle<Result<()>> {
    tokio::spawn(async move {
        let (tcp, _) = l.accept().await?;
        echo(LinkStream::Plain(tcp)).await
    })
}

/// Accepts one connection, runs the TLS server handshake, and echoes when it succeeds. Returns
/// the handshake result (`Ok(peer certificate count)`) so tests can check the server's view.
fn spawn_tls_echo(
    l: TcpListener,
    server: TlsServer,
) -> tokio::task::JoinHandle<Result<Result<usize, TransportError>>> {
    tokio::spawn(async move {
        let (tcp, _) = l.accept().await?;
        match server.accept(tcp, T).await {
            Ok(stream) => {
                assert!(stream.is_tls());
                let n = stream.peer_certificates().map_or(0, |c| c.len());
                echo(stream).await?;
                Ok(Ok(n))
            }
            Err(e) => Ok(Err(e)),
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Plain TCP
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn plain_connect_by_name_and_by_ip_echoes_both_ways() -> Result<()> {
    for host in ["localhost", "127.0.0.1"] {
        let (l, addr) = listener().await?;
        let server = spawn_plain_echo(l);
        let stream = transport::connect(&format!("{host}:{}", addr.port()), None, T).await?;
        assert!(!stream.is_tls());
        assert_eq!(stream.peer_addr(), Some(addr));
        assert!(stream.peer_certificates().is_none());
        check_echo(stream).await?;
        server.await??;
    }
    Ok(())
}

#[tokio::test]
async fn plain_connect_to_a_bracketed_ipv6_literal() -> Result<()> {
    let l = match transport::bind("[::1]:0".parse()?).await {
        Ok(l) => l,
        Err(e) if std::env::var_os("CI").is_none() => {
            eprintln!("SKIPPED: needs IPv6 loopback ({e})");
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    let addr = l.local_addr()?;
    let server = spawn_plain_echo(l);
    let stream = transport::connect(&format!("[::1]:{}", addr.port()), None, T).await?;
    assert_eq!(stream.peer_addr(), Some(addr));
    check_echo(stream).await?;
    server.await??;
    Ok(())
}

#[tokio::test]
async fn connect_to_closed_port_is_a_connect_error_naming_the_address() -> Result<()> {
    let (l, addr) = listener().await?;
    drop(l);
    let address = format!("127.0.0.1:{}", addr.port());
    let err = transport::connect(&address, None, T)
        .await
        .expect_err("nothing listens");
    match &err {
        TransportError::Connect { address: a, tried } => {
            assert_eq!(a, &address);
            assert_eq!(tried.len(), 1);
            assert_eq!(tried[0].0, addr);
        }
        other => panic!("expected Connect, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains(&address), "{msg}");
    Ok(())
}

#[tokio::test]
async fn connect_rejects_bad_addresses_and_unknown_names() -> Result<()> {
    let err = transport::connect("no-port-here", None, T)
        .await
        .expect_err("bad");
    assert!(matches!(err, TransportError::BadAddress { .. }), "{err:?}");

    // `.invalid` never resolves (RFC 6761); depending on the resolver this is an error or an
    // empty answer, and without a resolver it may time out. All name the address.
    let address = "hub.does-not-exist.invalid:7700";
    let err = transport::connect(address, None, Duration::from_secs(5))
        .await
        .expect_err("cannot resolve");
    assert!(
        matches!(
            err,
            TransportError::Resolve { .. }
                | TransportError::NoAddresses { .. }
                | TransportError::Timeout { .. }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains(address), "{err}");
    Ok(())
}

#[tokio::test]
async fn bind_conflict_is_a_bind_error() -> Result<()> {
    let (_l, addr) = listener().await?;
    let err = transport::bind(addr).await.expect_err("port in use");
    assert!(
        matches!(err, TransportError::Bind { addr: a, .. } if a == addr),
        "{err:?}"
    );
    assert!(err.to_string().contains(&addr.to_string()));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// TLS
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn tls_round_trip_by_name_and_by_ip() -> Result<()> {
    let pki = pki()?;
    let server = TlsServer::from_pem_files(&pki.server_cert, &pki.server_key, None)?;
    let client = TlsClient::from_pem_files(&pki.ca, None, None)?;
    // "localhost" checks the DNS SAN, "127.0.0.1" the IP SAN.
    for host in ["localhost", "127.0.0.1"] {
        let (l, addr) = listener().await?;
        let task = spawn_tls_echo(l, server.clone());
        let stream =
            transport::connect(&format!("{host}:{}", addr.port()), Some(&client), T).await?;
        assert!(matches!(stream, LinkStream::TlsClient(_)));
        assert_eq!(stream.peer_addr(), Some(addr));
        assert_eq!(stream.peer_certificates().map(|c| c.len()), Some(1));
        check_echo(stream).await?;
        // The server asked for no client certificate.
        assert_eq!(task.await??.expect("server handshake"), 0);
    }
    Ok(())
}

#[tokio::test]
async fn tls_server_name_override_is_checked_against_the_certificate() -> Result<()> {
    let pki = pki()?;
    let server = TlsServer::from_pem_files(&pki.server_cert, &pki.server_key, None)?;

    // Right name, reached by IP.
    let (l, addr) = listener().await?;
    let task = spawn_tls_echo(l, server.clone());
    let client = TlsClient::from_pem_files(&pki.ca, None, Some("localhost".into()))?;
    let stream = transport::connect(&addr.to_string(), Some(&client), T).await?;
    check_echo(stream).await?;
    task.await??.expect("server handshake");

    // A name the certificate does not carry.
    let (l, addr) = listener().await?;
    let task = spawn_tls_echo(l, server);
    let client = TlsClient::from_pem_files(&pki.ca, None, Some("hub.elsewhere.example".into()))?;
    let err = transport::connect(&addr.to_string(), Some(&client), T)
        .await
        .expect_err("name mismatch");
    assert!(matches!(err, TransportError::Tls { .. }), "{err:?}");
    assert!(task.await??.is_err(), "server must see the handshake fail");

    // An override that is no name at all is refused up front.
    let err = TlsClient::from_pem_files(&pki.ca, None, Some("not a name".into()))
        .expect_err("bad server name");
    assert!(matches!(err, TransportError::BadAddress { .. }), "{err:?}");
    Ok(())
}

#[tokio::test]
async fn tls_with_the_wrong_ca_fails_on_both_sides() -> Result<()> {
    let pki = pki()?;
    let server = TlsServer::from_pem_files(&pki.server_cert, &pki.server_key, None)?;
    let (l, addr) = listener().await?;
    let task = spawn_tls_echo(l, server);
    let client = TlsClient::from_pem_files(&pki.other_ca, None, None)?;
    let address = format!("localhost:{}", addr.port());
    let err = transport::connect(&address, Some(&client), T)
        .await
        .expect_err("unknown CA");
    match &err {
        TransportError::Tls { peer, source } => {
            assert_eq!(peer, &address);
            let inner = source
                .get_ref()
                .and_then(|e| e.downcast_ref::<rustls::Error>())
                .expect("a rustls error inside");
            assert!(
                matches!(inner, rustls::Error::InvalidCertificate(_)),
                "{inner:?}"
            );
        }
        other => panic!("expected Tls, got {other:?}"),
    }
    assert!(err.to_string().contains(&address));
    let server_side = task.await??;
    assert!(
        matches!(server_side, Err(TransportError::Tls { .. })),
        "{server_side:?}"
    );
    Ok(())
}

/// Server requiring client certificates: a client without one, or with one from another CA, is
/// refused; a client with a certificate from the client CA gets through and is seen by the
/// server.
#[tokio::test]
async fn mutual_tls_requires_a_client_certificate_from_the_client_ca() -> Result<()> {
    let pki = pki()?;
    let server =
        TlsServer::from_pem_files(&pki.server_cert, &pki.server_key, Some(&pki.client_ca))?;

    let anonymous = TlsClient::from_pem_files(&pki.ca, None, None)?;
    let intruder = TlsClient::from_pem_files(
        &pki.ca,
        Some((&pki.other_client_cert, &pki.other_client_key)),
        None,
    )?;
    for (name, client) in [("no certificate", &anonymous), ("foreign CA", &intruder)] {
        let (l, addr) = listener().await?;
        let task = spawn_tls_echo(l, server.clone());
        // With TLS 1.3 the client finishes its handshake before the server has judged the
        // client certificate: the refusal then arrives as an alert on the first read.
        match transport::connect(&format!("localhost:{}", addr.port()), Some(client), T).await {
            Err(e) => assert!(matches!(e, TransportError::Tls { .. }), "{name}: {e:?}"),
            Ok(mut stream) => {
                let mut buf = [0u8; 16];
                let read = tokio::time::timeout(T, stream.read(&mut buf)).await?;
                assert!(
                    matches!(read, Err(_) | Ok(0)),
                    "{name}: client read {read:?} from a server that refused it"
                );
            }
        }
        let server_side = task.await??;
        assert!(
            matches!(server_side, Err(TransportError::Tls { .. })),
            "{name}: server accepted: {server_side:?}"
        );
    }

    let edge = TlsClient::from_pem_files(&pki.ca, Some((&pki.client_cert, &pki.client_key)), None)?;
    let (l, addr) = listener().await?;
    let server2 = server.clone();
    let task = tokio::spawn(async move {
        let (tcp, _) = l.accept().await?;
        let stream = server2.accept(tcp, T).await?;
        let certs = stream.peer_certificates().expect("client certificate");
        let der = certs[0].as_ref().to_vec();
        echo(stream).await?;
        anyhow::Ok(der)
    });
    let stream = transport::connect(&format!("127.0.0.1:{}", addr.port()), Some(&edge), T).await?;
    check_echo(stream).await?;
    assert_eq!(
        task.await??,
        pki.client_cert_der,
        "server sees the edge's certificate"
    );
    Ok(())
}

#[tokio::test]
async fn tls_handshake_timeouts_on_both_sides() -> Result<()> {
    let pki = pki()?;
    let client = TlsClient::from_pem_files(&pki.ca, None, None)?;
    let server = TlsServer::from_pem_files(&pki.server_cert, &pki.server_key, None)?;
    let short = Duration::from_millis(200);

    // A server that accepts TCP and never answers the ClientHello.
    let (l, addr) = listener().await?;
    let mute = tokio::spawn(async move {
        let (tcp, _) = l.accept().await?;
        let mut tcp = tcp;
        let mut sink = Vec::new();
        // Holds the connection open until the client gives up.
        let _ = tcp.read_to_end(&mut sink).await;
        anyhow::Ok(())
    });
    let address = format!("localhost:{}", addr.port());
    let err = transport::connect(&address, Some(&client), short)
        .await
        .expect_err("mute server");
    assert!(
        matches!(&err, TransportError::Timeout { address: a, after } if a == &address && *after == short),
        "{err:?}"
    );
    mute.await??;

    // A client that connects and never sends a ClientHello.
    let (l, addr) = listener().await?;
    let idle = tokio::net::TcpStream::connect(addr).await?;
    let (tcp, _) = l.accept().await?;
    let err = server.accept(tcp, short).await.expect_err("mute client");
    assert!(matches!(err, TransportError::Timeout { .. }), "{err:?}");
    drop(idle);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// PEM errors
// ---------------------------------------------------------------------------------------------

#[test]
fn pem_errors_name_the_file_and_the_problem_but_not_the_key() -> Result<()> {
    let pki = pki()?;
    let dir = tempfile::tempdir()?;
    let empty = write(dir.path(), "empty.pem", "")?;
    let missing = dir.path().join("missing.pem");

    let err = TlsClient::from_pem_files(&missing, None, None).expect_err("missing");
    assert!(matches!(&err, TransportError::Pem { path, .. } if path == &missing));
    assert!(
        err.to_string().contains(&missing.display().to_string()),
        "{err}"
    );

    let err = TlsClient::from_pem_files(&empty, None, None).expect_err("empty");
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("no certificate in {}", empty.display())),
        "{msg}"
    );

    // A key file holding a certificate only.
    let err =
        TlsServer::from_pem_files(&pki.server_cert, &pki.server_cert, None).expect_err("no key");
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("no private key in {}", pki.server_cert.display())),
        "{msg}"
    );

    // A certificate file holding a key only.
    let err =
        TlsServer::from_pem_files(&pki.server_key, &pki.server_key, None).expect_err("no cert");
    assert!(err.to_string().contains("no certificate in"), "{err}");

    // Certificates with keys that do not belong to them: rustls checks the pair.
    let err = TlsClient::from_pem_files(&pki.ca, Some((&pki.client_cert, &pki.server_key)), None)
        .expect_err("client key mismatch");
    assert!(
        matches!(
            &err,
            TransportError::TlsConfig {
                what: "client certificate",
                ..
            }
        ),
        "{err:?}"
    );
    let err = TlsServer::from_pem_files(&pki.server_cert, &pki.client_key, None)
        .expect_err("server key mismatch");
    assert!(
        matches!(
            &err,
            TransportError::TlsConfig {
                what: "server certificate",
                ..
            }
        ),
        "{err:?}"
    );

    // Garbage in the key file: malformed PEM, message without its content.
    let garbage = write(
        dir.path(),
        "garbage.pem",
        "-----BEGIN PRIVATE KEY-----\nSECRETSECRET\n",
    )?;
    match TlsServer::from_pem_files(&pki.server_cert, &garbage, None) {
        Err(e) => {
            let msg = format!("{e} {e:?}");
            assert!(!msg.contains("SECRETSECRET"), "{msg}");
            assert!(msg.contains(&garbage.display().to_string()), "{msg}");
        }
        Ok(_) => panic!("garbage key accepted"),
    }

    // No error message ever carries the key body.
    let key_body: String = pki
        .server_key_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    for e in [
        TlsServer::from_pem_files(&pki.server_key, &pki.server_key, None).err(),
        TlsServer::from_pem_files(&pki.server_cert, &pki.client_key, None).err(),
        TlsClient::from_pem_files(&pki.server_key, None, None).err(),
    ]
    .into_iter()
    .flatten()
    {
        let msg = format!("{e} {e:?}");
        for line in key_body.as_bytes().chunks(16) {
            let line = std::str::from_utf8(line)?;
            assert!(!msg.contains(line), "key material in {msg}");
        }
    }
    Ok(())
}
