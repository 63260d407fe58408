//! gRPC over Unix sockets: dialing (tonic `Endpoint` with a custom
//! connector) and listening (stale socket files removed first).

use std::io;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::{CancellationToken, DropGuard};
use tonic::transport::{Channel, Endpoint, Uri};

use crate::error::DmiError;

/// A connection to a gRPC server on a Unix socket that is *not* silently
/// re-established: once the socket closes (the peer restarted), `lost` is
/// cancelled and every later call fails, so the owner re-dials (and, for
/// edgecore, registers again).
#[derive(Debug, Clone)]
pub struct Connection {
    pub channel: Channel,
    /// Cancelled when the underlying socket is closed.
    pub lost: CancellationToken,
}

/// The socket, with a guard that cancels a token when hyper drops it.
struct Watched {
    inner: UnixStream,
    _guard: DropGuard,
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

fn endpoint(timeout: Duration) -> Endpoint {
    // The URI is not used for routing (the connector ignores it) but must parse.
    Endpoint::from_static("http://localhost")
        .connect_timeout(timeout)
        .timeout(timeout)
}

/// Dials a gRPC server on `path` once (see [`Connection`]); `timeout` bounds
/// the dial and every call.
pub async fn connect_once(path: &Path, timeout: Duration) -> Result<Connection, DmiError> {
    let lost = CancellationToken::new();
    let used = Arc::new(AtomicBool::new(false));
    let (p, token) = (path.to_path_buf(), lost.clone());
    let connector = tower::service_fn(move |_: Uri| {
        let (p, token, used) = (p.clone(), token.clone(), used.clone());
        async move {
            if used.load(Ordering::SeqCst) {
                return Err(io::Error::new(
                    io::ErrorKind::NotConnected,
                    "the connection was lost; dial again",
                ));
            }
            let inner = UnixStream::connect(&p).await?;
            used.store(true, Ordering::SeqCst);
            Ok::<_, io::Error>(TokioIo::new(Watched {
                inner,
                _guard: token.drop_guard(),
            }))
        }
    });
    let channel = endpoint(timeout)
        .connect_with_connector(connector)
        .await
        .map_err(|source| DmiError::Connect {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(Connection { channel, lost })
}

/// Dials a gRPC server on `path`, re-dialing on demand after a loss (for
/// clients that do not care about restarts, like edgecore's side in tests).
pub async fn connect(path: &Path, timeout: Duration) -> Result<Channel, DmiError> {
    let p = path.to_path_buf();
    let connector = tower::service_fn(move |_: Uri| {
        let p = p.clone();
        async move { Ok::<_, io::Error>(TokioIo::new(UnixStream::connect(&p).await?)) }
    });
    endpoint(timeout)
        .connect_with_connector(connector)
        .await
        .map_err(|source| DmiError::Connect {
            path: path.to_path_buf(),
            source,
        })
}

/// Binds a listener on `path`. A stale socket file there is removed first; any
/// other kind of file is left alone and is an error. The parent directory is created.
pub fn bind(path: &Path) -> Result<UnixListener, DmiError> {
    let err = |source| DmiError::Socket {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path).map_err(err)?,
        Ok(_) => {
            return Err(err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "exists and is not a socket; not removing it",
            )))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(err)?;
    }
    UnixListener::bind(path).map_err(err)
}

/// Removes the socket file at `path` if it is one (on shutdown).
pub fn unlink(path: &PathBuf) {
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
        if let Err(error) = std::fs::remove_file(path) {
            tracing::warn!(path = %path.display(), %error, "could not remove the socket file");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bind_replaces_a_stale_socket_but_not_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("sub").join("m.sock");
        let l = bind(&sock).unwrap();
        drop(l);
        assert!(sock.exists(), "a stale socket file stays behind");
        let _l = bind(&sock).unwrap();
        let file = dir.path().join("plain");
        std::fs::write(&file, b"x").unwrap();
        assert!(matches!(bind(&file), Err(DmiError::Socket { .. })));
        assert!(file.exists());
        unlink(&sock);
        assert!(!sock.exists());
        unlink(&file.clone());
        assert!(file.exists());
    }

    #[tokio::test]
    async fn connect_to_nothing_fails() {
        let dir = tempfile::tempdir().unwrap();
        assert!(
            connect_once(&dir.path().join("none.sock"), Duration::from_secs(1))
                .await
                .is_err()
        );
    }
}
