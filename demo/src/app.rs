//! The whole demo wired together: spies, broker, twin store, hub, robots, edges, mappers and
//! the fleet manager; the live view and the input; the end-of-run checks.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ros2::msg::Registry;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::broker::Broker;
use crate::checks::{self, Check, MissionObs, Observations, SpeedObs};
use crate::console::{self, Command};
use crate::devices::{self, Mapper, RobotDevice};
use crate::fleet::Fleet;
use crate::robot::{new_participant, Robot};
use crate::spy::Spy;
use crate::twinstore::{Member, TwinService, TwinStore};
use crate::view::{Frame, Rates, RouteRow, Screen};

/// The demo's options.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "demo",
    about = "kubeedge-ros2: two simulated robots, bridges, a hub, mappers and a twin store on this host's loopback"
)]
pub struct Args {
    /// Seconds to run; 0 runs until Ctrl-C (or `quit`).
    #[arg(long, default_value_t = 30)]
    pub duration: u64,
    /// DDS domains: the cloud is BASE, robot1 BASE+1, robot2 BASE+2.
    #[arg(long, default_value_t = 40, value_parser = clap::value_parser!(u16).range(0..=230))]
    pub domain_base: u16,
    /// The hub's HTTP status server (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:9181")]
    pub hub_status: SocketAddr,
    /// The desired speed limit the demo sets on robot1 partway through a run.
    #[arg(long, default_value = "0.3")]
    pub speed_limit: String,
}

/// The robots.
pub const ROBOTS: [&str; 2] = ["robot1", "robot2"];
/// How long the eventual checks (missions, speed limit) may take after the run's end.
pub const GRACE: Duration = Duration::from_secs(30);

fn println_flush(s: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{s}");
    let _ = out.flush();
}

struct Parts {
    robots: Vec<Robot>,
    devices: Vec<RobotDevice>,
    fleet: Fleet,
    twins: TwinService,
    cloud_spy: Spy,
    robot1_spy: Spy,
    hub: bridge::app::Running,
    edges: Vec<(String, bridge::app::Running)>,
    desired: BTreeMap<String, f64>,
}

impl Parts {
    fn observations(&self) -> Observations {
        let cloud = self.cloud_spy.sightings();
        let r1 = self.robot1_spy.sightings();
        let fleet = self.fleet.view();
        Observations {
            robots: ROBOTS.iter().map(|s| s.to_string()).collect(),
            cloud_topics: cloud.topics,
            hub_routes: self
                .hub
                .status
                .borrow()
                .routes
                .iter()
                .map(|r| r.route.clone())
                .collect(),
            robot1_topics: r1.topics,
            robot1_samples: r1.samples.values().sum(),
            robot1_foreign_samples: r1.marked.values().sum(),
            missions: fleet
                .iter()
                .map(|(r, v)| MissionObs {
                    robot: r.clone(),
                    sent: v.missions_sent,
                    acked: v.acked,
                })
                .collect(),
            speed: self
                .robots
                .iter()
                .zip(&self.devices)
                .map(|(r, d)| {
                    let s = r.state();
                    let (twins, _) = self.twins.device(&d.id);
                    SpeedObs {
                        robot: r.name.clone(),
                        desired: self.desired.get(&r.name).copied(),
                        applied: s.applied_limit,
                        clamped: s.clamped,
                        over_limit: s.over_limit,
                        speed: s.speed,
                        commanded: s.commanded,
                        reported: twins
                            .get("speed-limit")
                            .and_then(|t| t.actual.as_ref())
                            .map(|(v, _)| v.clone()),
                    }
                })
                .collect(),
        }
    }

    fn frame(
        &self,
        started: Instant,
        rates: &mut Rates,
        events: &[String],
        interactive: bool,
    ) -> Frame {
        let now = started.elapsed().as_secs_f64();
        let mut routes = Vec::new();
        let bridges = std::iter::once(("hub".to_owned(), &self.hub))
            .chain(self.edges.iter().map(|(n, r)| (n.clone(), r)));
        for (name, running) in bridges {
            for r in &running.status.borrow().routes {
                let key = format!("{name} {} {:?}", r.route, r.direction);
                routes.push(RouteRow {
                    bridge: name.clone(),
                    route: r.route.clone(),
                    messages: r.messages,
                    dropped: r.dropped,
                    rate: rates.rate(&key, r.messages, now),
                });
            }
        }
        Frame {
            elapsed_s: now as u64,
            robots: self.robots.iter().map(Robot::state).collect(),
            fleet: self.fleet.view(),
            routes,
            twins: self
                .devices
                .iter()
                .map(|d| {
                    let (twins, state) = self.twins.device(&d.id);
                    let cells = twins
                        .iter()
                        .map(|(p, t)| {
                            let v = |x: &Option<(String, i64)>| {
                                x.as_ref().map(|(v, _)| v.clone()).unwrap_or_default()
                            };
                            (
                                p.clone(),
                                if t.actual.is_some() {
                                    v(&t.actual)
                                } else {
                                    "-".into()
                                },
                                v(&t.expected),
                            )
                        })
                        .collect();
                    (d.id.clone(), state, cells)
                })
                .collect(),
            events: events.to_vec(),
            interactive,
        }
    }

    async fn set_desired(&mut self, robot: &str, prop: &str, value: &str) -> Result<()> {
        let d = self
            .devices
            .iter()
            .find(|d| d.robot == robot)
            .with_context(|| format!("no robot {robot} (robots: {})", ROBOTS.join(", ")))?;
        self.twins.set_desired(&d.id, prop, value).await?;
        if prop == "speed-limit" {
            if let Ok(v) = value.parse::<f64>() {
                self.desired.insert(robot.to_owned(), v);
            }
        }
        Ok(())
    }
}

/// Runs the demo; returns the checks.
pub async fn run(args: Args) -> Result<Vec<Check>> {
    let shutdown = CancellationToken::new();
    {
        let s = shutdown.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                s.cancel();
            }
        });
    }
    let cloud = args.domain_base;
    let domains: Vec<u16> = (1..=ROBOTS.len() as u16).map(|i| cloud + i).collect();
    let registry = Arc::new(Registry::bundled());
    println_flush(&format!(
        "domains: cloud {cloud}, {} (loopback only)",
        ROBOTS
            .iter()
            .zip(&domains)
            .map(|(r, d)| format!("{r} {d}"))
            .collect::<Vec<_>>()
            .join(", ")
    ));

    // The spies first, so they see everything from the start.
    let cloud_spy = Spy::start(new_participant(cloud).await?, "", shutdown.clone());
    let robot1_spy = Spy::start(
        new_participant(domains[0]).await?,
        ROBOTS[1],
        shutdown.clone(),
    );

    // The eventbus and the twin store.
    let broker = Broker::start(shutdown.clone()).await?;
    let devices: Vec<RobotDevice> = ROBOTS
        .iter()
        .zip(&domains)
        .map(|(r, d)| devices::robot_device(r, *d))
        .collect::<Result<_>>()?;
    let store = TwinStore::new(
        devices
            .iter()
            .map(|d| Member {
                node: d.node.clone(),
                id: d.id.clone(),
                name: d.robot.clone(),
            })
            .collect(),
        devices
            .iter()
            .flat_map(|d| {
                d.desired
                    .iter()
                    .map(|(p, v)| (d.id.clone(), p.clone(), v.clone()))
            })
            .collect(),
        mapper_core::backend::now_ms(),
    );
    let twins = TwinService::start(broker.addr, store, shutdown.clone()).await?;
    println_flush(&format!(
        "MQTT broker (embedded): {}; twin store serves {}",
        broker.url(),
        devices
            .iter()
            .map(|d| d.id.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    ));

    // The hub and the edges.
    let tokens: Vec<(String, String)> = ROBOTS
        .iter()
        .map(|r| (r.to_string(), crate::relay::token(r)))
        .collect();
    let hub = crate::relay::hub(cloud, args.hub_status, &tokens, shutdown.clone()).await?;
    let hub_link = hub.link_addr.context("the hub has no link address")?;
    match hub.http_addr {
        Some(a) => println_flush(&format!("hub status page: http://{a}/")),
        None => println_flush("hub status page: off"),
    }

    // The robots, their edges and mappers.
    let mut robots = Vec::new();
    let mut edges = Vec::new();
    let mut mappers = Vec::new();
    for ((r, d), (_, token)) in ROBOTS.iter().zip(&domains).zip(&tokens) {
        robots.push(Robot::start(r, *d, registry.clone(), shutdown.clone()).await?);
        let e = crate::relay::edge(r, *d, hub_link, token, shutdown.clone()).await?;
        if let Some(a) = e.http_addr {
            println_flush(&format!("{r} edge status page: http://{a}/"));
        }
        edges.push((r.to_string(), e));
    }
    for (dev, d) in devices.iter().zip(&domains) {
        mappers.push(Mapper::start(
            dev,
            *d,
            &broker.url(),
            registry.clone(),
            shutdown.clone(),
        )?);
    }
    let fleet_participant = new_participant(cloud).await?;
    let names: Vec<String> = ROBOTS.iter().map(|s| s.to_string()).collect();
    let fleet = Fleet::start(&fleet_participant, &registry, &names, shutdown.clone())?;

    let mut parts = Parts {
        robots,
        devices,
        fleet,
        twins,
        cloud_spy,
        robot1_spy,
        hub,
        edges,
        desired: BTreeMap::new(),
    };

    // The live loop.
    let interactive = std::io::stdin().is_terminal();
    let mut screen = Screen::new(std::io::stdout().is_terminal());
    let (line_tx, mut lines) = mpsc::channel::<String>(16);
    if interactive {
        console::spawn_reader(line_tx, shutdown.clone());
    } else {
        drop(line_tx);
    }
    let started = Instant::now();
    let end = (args.duration > 0).then(|| started + Duration::from_secs(args.duration));
    let auto_set_at = started
        + match args.duration {
            0 => Duration::from_secs(10),
            d => Duration::from_secs(d) * 2 / 5,
        };
    let mut auto_set = false;
    let mut events: Vec<String> = Vec::new();
    let mut rates = Rates::default();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut grace_until: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
            line = lines.recv(), if interactive => {
                let Some(line) = line else { continue };
                match console::parse(&line) {
                    Ok(Command::SetDesired { robot, property, value }) => {
                        match parts.set_desired(&robot, &property, &value).await {
                            Ok(()) => {
                                auto_set = true;
                                events.push(format!("you set {robot} {property} = {value} (desired)"));
                            }
                            Err(e) => events.push(format!("refused: {e:#}")),
                        }
                    }
                    Ok(Command::Help) => events.push(console::HELP.to_owned()),
                    Ok(Command::Quit) => break,
                    Ok(Command::Empty) => {}
                    Err(e) => events.push(e),
                }
            }
        }
        let now = Instant::now();
        if !auto_set && now >= auto_set_at {
            auto_set = true;
            let v = args.speed_limit.clone();
            match parts.set_desired(ROBOTS[0], "speed-limit", &v).await {
                Ok(()) => events.push(format!(
                    "demo sets {} speed-limit = {v} (desired twin; the mapper publishes /speed_limit)",
                    ROBOTS[0]
                )),
                Err(e) => events.push(format!("could not set the speed limit: {e:#}")),
            }
        }
        screen.show(
            &parts.frame(started, &mut rates, &events, interactive),
            &events,
        );
        if let Some(end) = end {
            if now >= end {
                let c = checks::evaluate(&parts.observations());
                if !checks::pending(&c) {
                    break;
                }
                let until = *grace_until.get_or_insert_with(|| {
                    events.push(format!(
                        "time is up; waiting up to {} s for missions and the speed limit to complete",
                        GRACE.as_secs()
                    ));
                    now + GRACE
                });
                if now >= until {
                    break;
                }
            }
        }
    }

    let checks = checks::evaluate(&parts.observations());
    shutdown.cancel();
    let Parts {
        robots,
        fleet,
        cloud_spy,
        robot1_spy,
        hub,
        edges,
        ..
    } = parts;
    let stop = async {
        for m in mappers {
            m.stop().await;
        }
        fleet.stop().await;
        fleet_participant.shutdown();
        for r in robots {
            r.stop().await;
        }
        for (_, e) in edges {
            let _ = e.done.await;
        }
        let _ = hub.done.await;
        cloud_spy.stop().await;
        robot1_spy.stop().await;
        broker.stop().await;
    };
    if tokio::time::timeout(Duration::from_secs(10), stop)
        .await
        .is_err()
    {
        tracing::warn!("shutdown took longer than 10 s; exiting anyway");
    }
    Ok(checks)
}
