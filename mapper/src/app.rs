//! Wiring: the message registry, the core manager, the chosen backend, the
//! MQTT data push, the HTTP endpoints, and graceful drain on SIGTERM.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use mapper_core::backend;
use mapper_core::mapper::{Manager, ManagerConfig};
use mapper_core::metrics::Metrics;
use ros2::msg::Registry;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{BackendKind, MapperConfig};

/// Runs the mapper until SIGTERM/SIGINT (or a fatal backend error).
pub async fn run(cfg: MapperConfig) -> Result<()> {
    let shutdown = CancellationToken::new();
    let mut registry = Registry::bundled();
    for dir in &cfg.ros.interface_dirs {
        let n = registry
            .load_dir(dir)
            .with_context(|| format!("ros.interfaceDirs: {}", dir.display()))?;
        tracing::info!(dir = %dir.display(), files = n, "interface definitions loaded");
    }
    let metrics = Arc::new(Metrics::default());
    let mut prom = prometheus_client::registry::Registry::default();
    metrics.register(&mut prom);

    let (io, events, reports) = backend::channels(shutdown.clone());
    let (push_tx, push_rx) = mpsc::channel(backend::CHANNEL_CAPACITY);
    let manager = Manager::new(
        ManagerConfig {
            defaults: cfg.plan_defaults(),
            discovery_range: cfg.discovery_range()?,
            only_networks: (!cfg.ros.interfaces.is_empty()).then(|| cfg.ros.interfaces.clone()),
        },
        Arc::new(registry),
        reports,
        Some(push_tx),
        metrics.clone(),
        shutdown.clone(),
    );
    let status = manager.status();
    let manager_task = tokio::spawn(manager.run(events));

    let backend_name = match cfg.backend {
        BackendKind::Mqtt => "mqtt",
        BackendKind::Dmi => "dmi",
        BackendKind::Kube => "kube",
    };
    let mut backend_task: JoinHandle<Result<()>> = match cfg.backend {
        BackendKind::Mqtt => {
            let c = cfg.mqtt.clone().context("mqtt section missing")?;
            tokio::spawn(async move { Ok(mapper_mqtt::run(c, io).await?) })
        }
        BackendKind::Dmi => {
            let c = cfg.dmi.clone().context("dmi section missing")?;
            tokio::spawn(async move { Ok(mapper_dmi::run(c, io).await?) })
        }
        BackendKind::Kube => {
            let c = cfg.kube.clone().context("kube section missing")?;
            mapper_kube::install_crypto_provider();
            let client = kube::Client::try_default()
                .await
                .context("Kubernetes client (in-cluster or KUBECONFIG)")?;
            tokio::spawn(async move { Ok(mapper_kube::run(c, client, io).await?) })
        }
    };
    let push_task = tokio::spawn(mapper_mqtt::run_push(push_rx, shutdown.clone()));
    let http_task = cfg.http.enabled.then(|| {
        tokio::spawn(crate::http::serve(
            cfg.http.listen,
            Arc::new(prom),
            status,
            backend_name,
            shutdown.clone(),
        ))
    });
    tracing::info!(
        backend = backend_name,
        node = cfg.node.as_deref().unwrap_or(""),
        "mapper started"
    );

    let outcome = tokio::select! {
        _ = signal_terminate() => { tracing::info!("termination signal: draining"); Ok(()) }
        r = &mut backend_task => match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => { tracing::error!(error = %e, "backend failed"); Err(e) }
            Err(e) => Err(anyhow::anyhow!("backend task: {e}")),
        },
    };
    shutdown.cancel();
    let grace = Duration::from_secs(cfg.shutdown_grace_seconds);
    let drain = async {
        let _ = manager_task.await;
        if !backend_task.is_finished() {
            let _ = backend_task.await;
        }
        let _ = push_task.await;
        if let Some(h) = http_task {
            let _ = h.await;
        }
    };
    if tokio::time::timeout(grace, drain).await.is_err() {
        tracing::warn!(?grace, "drain did not finish in time; exiting anyway");
    }
    outcome
}

async fn signal_terminate() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
