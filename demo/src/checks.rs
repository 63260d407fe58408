//! The demo's checks, evaluated from what the spies, the hub, the fleet manager, the robots and
//! the twin store observed (pure: observations in, verdicts out).

use std::collections::BTreeSet;

/// The sensor topics that must stay on their robot.
pub const SENSOR_TOPICS: [&str; 3] = ["battery_state", "odom", "points"];

/// Mission round trips of one robot.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MissionObs {
    pub robot: String,
    pub sent: u64,
    pub acked: u64,
}

/// The speed limit path of one robot.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpeedObs {
    pub robot: String,
    /// The desired value set on the twin.
    pub desired: Option<f64>,
    /// The limit the actuator applies.
    pub applied: Option<f64>,
    /// Commands clamped to the applied limit, and applied speeds above it.
    pub clamped: u64,
    pub over_limit: u64,
    /// The speed the actuator applies now and the last commanded one.
    pub speed: f64,
    pub commanded: f64,
    /// The reported twin (`speed-limit` actual).
    pub reported: Option<String>,
}

/// Everything the checks look at.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observations {
    pub robots: Vec<String>,
    /// Topics the cloud spy discovered (ROS names).
    pub cloud_topics: BTreeSet<String>,
    /// The hub's routes as displayed.
    pub hub_routes: Vec<String>,
    /// Topics robot1's spy discovered, its samples in all and those naming robot2.
    pub robot1_topics: BTreeSet<String>,
    pub robot1_samples: u64,
    pub robot1_foreign_samples: u64,
    pub missions: Vec<MissionObs>,
    pub speed: Vec<SpeedObs>,
}

/// One verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    pub name: &'static str,
    pub passed: bool,
    pub detail: String,
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-6
}

/// Sensor topic names that would betray a leak: `/{robot}/{sensor}` and `/{sensor}`.
pub fn forbidden_cloud_topics(robots: &[String]) -> BTreeSet<String> {
    let mut f: BTreeSet<String> = SENSOR_TOPICS.iter().map(|s| format!("/{s}")).collect();
    for r in robots {
        for s in SENSOR_TOPICS {
            f.insert(format!("/{r}/{s}"));
        }
    }
    f
}

/// Evaluates the four checks.
pub fn evaluate(o: &Observations) -> Vec<Check> {
    let mut out = Vec::new();

    // 1. sensor topics never left their robot.
    let forbidden = forbidden_cloud_topics(&o.robots);
    let leaked: Vec<&String> = o.cloud_topics.intersection(&forbidden).collect();
    let leaked_routes: Vec<&String> = o
        .hub_routes
        .iter()
        .filter(|r| SENSOR_TOPICS.iter().any(|s| r.contains(&format!("/{s}"))))
        .collect();
    let statuses_seen = o
        .robots
        .iter()
        .all(|r| o.cloud_topics.contains(&format!("/{r}/fleet_status")));
    out.push(Check {
        name: "sensor topics never left their robot",
        passed: leaked.is_empty() && leaked_routes.is_empty() && statuses_seen,
        detail: if !leaked.is_empty() || !leaked_routes.is_empty() {
            format!("cloud saw {leaked:?}, hub routes {leaked_routes:?}")
        } else if !statuses_seen {
            "the cloud spy never saw the robots' /fleet_status (it saw nothing to judge)".into()
        } else {
            format!(
                "cloud spy saw {} topics, none of {}; hub routes: {}",
                o.cloud_topics.len(),
                forbidden.len(),
                o.hub_routes.len()
            )
        },
    });

    // 2. robot1 never saw robot2's topics.
    let foreign_topics: Vec<&String> = o
        .robot1_topics
        .iter()
        .filter(|t| t.contains("robot2"))
        .collect();
    let own = o.robot1_topics.contains("/odom") && o.robot1_samples > 0;
    out.push(Check {
        name: "robot1 never saw robot2's topics",
        passed: foreign_topics.is_empty() && o.robot1_foreign_samples == 0 && own,
        detail: if !foreign_topics.is_empty() || o.robot1_foreign_samples > 0 {
            format!(
                "robot1's domain had {foreign_topics:?} and {} samples naming robot2",
                o.robot1_foreign_samples
            )
        } else if !own {
            "robot1's spy saw none of robot1's own traffic (nothing to judge)".into()
        } else {
            format!(
                "robot1's spy: {} topics, {} samples, none from robot2",
                o.robot1_topics.len(),
                o.robot1_samples
            )
        },
    });

    // 3. commands round-tripped.
    let missing: Vec<&str> = o
        .robots
        .iter()
        .filter(|r| !o.missions.iter().any(|m| &m.robot == *r && m.acked > 0))
        .map(String::as_str)
        .collect();
    out.push(Check {
        name: "commands round-tripped (mission -> robot -> status in the cloud)",
        passed: missing.is_empty() && !o.robots.is_empty(),
        detail: o
            .missions
            .iter()
            .map(|m| format!("{}: {}/{} acknowledged", m.robot, m.acked, m.sent))
            .collect::<Vec<_>>()
            .join(", "),
    });

    // 4. the desired speed limit reached the actuator.
    let set: Vec<&SpeedObs> = o.speed.iter().filter(|s| s.desired.is_some()).collect();
    let ok = |s: &SpeedObs| {
        let d = s.desired.unwrap_or(f64::NAN);
        s.applied.is_some_and(|a| close(a, d))
            && s.over_limit == 0
            && s.clamped > 0
            && s.speed.abs() <= d + 1e-9
            && s.reported
                .as_deref()
                .and_then(|r| r.parse::<f64>().ok())
                .is_some_and(|r| close(r, d))
    };
    out.push(Check {
        name: "desired speed limit reached the actuator (and the reported twin)",
        passed: !set.is_empty() && set.iter().all(|s| ok(s)),
        detail: if set.is_empty() {
            "no desired speed limit was set".into()
        } else {
            set.iter()
                .map(|s| {
                    format!(
                        "{}: desired {}, applied {}, {} commands clamped, {} over, reported {}",
                        s.robot,
                        s.desired.map(|d| d.to_string()).unwrap_or_default(),
                        s.applied
                            .map(|d| d.to_string())
                            .unwrap_or_else(|| "-".into()),
                        s.clamped,
                        s.over_limit,
                        s.reported.as_deref().unwrap_or("-"),
                    )
                })
                .collect::<Vec<_>>()
                .join("; ")
        },
    });
    out
}

/// Whether a failed check may still come true with time (the eventual ones: 3 and 4).
pub fn pending(checks: &[Check]) -> bool {
    checks.iter().skip(2).any(|c| !c.passed) && checks.iter().take(2).all(|c| c.passed)
}

/// The summary as printed.
pub fn summary(checks: &[Check]) -> Vec<String> {
    let mut lines = vec!["== summary ==".to_owned()];
    for (i, c) in checks.iter().enumerate() {
        lines.push(format!(
            "check {}: {} {} ({})",
            i + 1,
            if c.passed { "PASS" } else { "FAIL" },
            c.name,
            c.detail
        ));
    }
    let passed = checks.iter().filter(|c| c.passed).count();
    lines.push(format!(
        "{} of {} checks passed: {}",
        passed,
        checks.len(),
        if passed == checks.len() {
            "ALL PASS"
        } else {
            "FAILED"
        }
    ));
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> Observations {
        let robots = vec!["robot1".to_owned(), "robot2".to_owned()];
        Observations {
            cloud_topics: [
                "/robot1/fleet_status",
                "/robot2/fleet_status",
                "/robot1/mission",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            hub_routes: vec!["ROS:/fleet_status -> cloud:/robot1/fleet_status".into()],
            robot1_topics: ["/odom", "/points", "/mission"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            robot1_samples: 10,
            robot1_foreign_samples: 0,
            missions: robots
                .iter()
                .map(|r| MissionObs {
                    robot: r.clone(),
                    sent: 3,
                    acked: 2,
                })
                .collect(),
            speed: vec![SpeedObs {
                robot: "robot1".into(),
                desired: Some(0.3),
                applied: Some(0.3),
                clamped: 5,
                over_limit: 0,
                speed: 0.3,
                commanded: 0.8,
                reported: Some("0.3".into()),
            }],
            robots,
        }
    }

    #[test]
    fn all_pass_when_everything_held() {
        let c = evaluate(&good());
        assert!(c.iter().all(|c| c.passed), "{c:#?}");
        assert!(summary(&c).last().is_some_and(|l| l.ends_with("ALL PASS")));
        assert!(!pending(&c));
    }

    #[test]
    fn a_leaked_sensor_topic_fails_check_1() {
        let mut o = good();
        o.cloud_topics.insert("/robot2/points".into());
        assert!(!evaluate(&o)[0].passed);
        let mut o = good();
        o.cloud_topics.insert("/odom".into());
        assert!(!evaluate(&o)[0].passed);
        let mut o = good();
        o.hub_routes.push("ROS:/odom -> cloud:/robot1/odom".into());
        assert!(!evaluate(&o)[0].passed);
        let mut o = good();
        o.cloud_topics.clear();
        assert!(!evaluate(&o)[0].passed, "a blind spy proves nothing");
    }

    #[test]
    fn robot2_in_robot1s_domain_fails_check_2() {
        let mut o = good();
        o.robot1_topics.insert("/robot2/mission".into());
        assert!(!evaluate(&o)[1].passed);
        let mut o = good();
        o.robot1_foreign_samples = 1;
        assert!(!evaluate(&o)[1].passed);
    }

    #[test]
    fn an_unacknowledged_robot_fails_check_3_and_is_pending() {
        let mut o = good();
        o.missions[1].acked = 0;
        let c = evaluate(&o);
        assert!(!c[2].passed);
        assert!(pending(&c));
    }

    #[test]
    fn check_4_needs_applied_clamped_and_reported() {
        for f in [
            |s: &mut SpeedObs| s.applied = Some(0.5),
            |s: &mut SpeedObs| s.clamped = 0,
            |s: &mut SpeedObs| s.over_limit = 1,
            |s: &mut SpeedObs| s.reported = Some("0.5".into()),
            |s: &mut SpeedObs| s.desired = None,
        ] {
            let mut o = good();
            f(&mut o.speed[0]);
            assert!(!evaluate(&o)[3].passed, "{:?}", o.speed[0]);
        }
    }
}
