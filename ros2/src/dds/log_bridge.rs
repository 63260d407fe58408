//! Route the `log` records of rustdds (and any other `log` user) into
//! `tracing`.

use std::sync::OnceLock;

use super::DdsError;

static INSTALLED: OnceLock<bool> = OnceLock::new();

/// Install [`tracing_log::LogTracer`] as the process-wide `log` logger so that
/// rustdds' output reaches the `tracing` subscriber. Idempotent: later calls
/// return the first call's outcome. Fails with [`DdsError::LogBridge`] if some
/// other `log` logger was installed first.
///
/// Not needed after `tracing_subscriber::fmt().init()` (or `try_init`): with
/// its default `tracing-log` feature that already installs the same bridge.
/// Call this when the subscriber was set with `set_global_default`.
///
/// rustdds is chatty at `info` (participants, matches, port choices);
/// recommended filter: `RUST_LOG=info,rustdds=warn` (`EnvFilter` syntax),
/// `rustdds=debug` when diagnosing discovery.
pub fn init_log_bridge() -> Result<(), DdsError> {
    let ok = *INSTALLED.get_or_init(|| match tracing_log::LogTracer::init() {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %e, "log->tracing bridge not installed");
            false
        }
    });
    if ok {
        Ok(())
    } else {
        Err(DdsError::LogBridge)
    }
}
