//! The live terminal view: robots, routes with rates (from the bridges' status), twins, and
//! the last events. [`render`] is pure; [`Screen`] redraws on a TTY or prints plain lines.

use std::collections::BTreeMap;
use std::io::Write;

use crate::fleet::RobotView;
use crate::robot::RobotState;

/// One route as shown: which bridge, the route, messages so far and the rate.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteRow {
    pub bridge: String,
    pub route: String,
    pub messages: u64,
    pub dropped: u64,
    pub rate: f64,
}

/// A twin value as shown: numbers with a fraction at three decimals at most (the twin keeps
/// the full value), anything else as it is.
pub fn short_number(v: &str) -> String {
    match v.parse::<f64>() {
        Ok(x) if v.contains('.') && x.is_finite() => {
            let s = format!("{x:.3}");
            s.trim_end_matches('0').trim_end_matches('.').to_owned()
        }
        _ => v.to_owned(),
    }
}

/// One twin as shown: (property, actual, expected).
pub type TwinCell = (String, String, String);
/// A device as shown: (device id, state, twins).
pub type DeviceTwins = (String, Option<String>, Vec<TwinCell>);

/// Everything one frame shows.
#[derive(Debug, Clone, Default)]
pub struct Frame {
    pub elapsed_s: u64,
    pub robots: Vec<RobotState>,
    pub fleet: BTreeMap<String, RobotView>,
    pub routes: Vec<RouteRow>,
    /// Per device: its twins and state.
    pub twins: Vec<DeviceTwins>,
    pub events: Vec<String>,
    pub interactive: bool,
}

/// Rates per route from successive message counts.
#[derive(Debug, Default)]
pub struct Rates {
    last: BTreeMap<String, (u64, f64)>,
}

impl Rates {
    /// Messages per second of `key` since the previous call at `now_s`.
    pub fn rate(&mut self, key: &str, messages: u64, now_s: f64) -> f64 {
        let r = match self.last.get(key) {
            Some((m, t)) if now_s > *t => messages.saturating_sub(*m) as f64 / (now_s - t),
            _ => 0.0,
        };
        self.last.insert(key.to_owned(), (messages, now_s));
        r
    }
}

/// The frame as lines.
pub fn render(f: &Frame) -> Vec<String> {
    let mut l = vec![format!(
        "kubeedge-ros2 demo: two robots, one hub, t = {} s{}",
        f.elapsed_s,
        if f.interactive {
            "   (type e.g. `robot1 speed-limit 0.3` + Enter; `help`; `quit`)"
        } else {
            ""
        }
    )];
    l.push("robots (each in its own DDS domain):".into());
    for r in &f.robots {
        let fleet = f.fleet.get(&r.name);
        l.push(format!(
            "  {:<7} domain {:<3} battery {:5.1}%  temp {:4.1}C  pose ({:5.2},{:5.2})  speed {:4.2} (cmd {:4.2}, limit {})  mission {} [{}]  acked {}/{}",
            r.name,
            r.domain,
            r.battery * 100.0,
            r.temperature,
            r.x,
            r.y,
            r.speed,
            r.commanded,
            r.applied_limit.map(|v| format!("{v:.2}")).unwrap_or_else(|| "-".into()),
            r.mission.as_deref().unwrap_or("-"),
            r.mission_state,
            fleet.map(|v| v.acked).unwrap_or(0),
            fleet.map(|v| v.missions_sent).unwrap_or(0),
        ));
    }
    l.push("routes (bridge status):".into());
    if f.routes.is_empty() {
        l.push("  (none yet)".into());
    }
    for r in &f.routes {
        l.push(format!(
            "  {:<6} {:<52} {:>6} msgs {:>6.1}/s{}",
            r.bridge,
            r.route,
            r.messages,
            r.rate,
            if r.dropped > 0 {
                format!("  {} dropped", r.dropped)
            } else {
                String::new()
            }
        ));
    }
    l.push("device twins (reported / desired):".into());
    for (id, state, twins) in &f.twins {
        let cells: Vec<String> = twins
            .iter()
            .map(|(p, a, e)| {
                let a = short_number(a);
                if e.is_empty() {
                    format!("{p}={a}")
                } else {
                    format!("{p}={a}/{}", short_number(e))
                }
            })
            .collect();
        l.push(format!(
            "  {:<15} [{}] {}",
            id,
            state.as_deref().unwrap_or("-"),
            cells.join(" ")
        ));
    }
    if !f.events.is_empty() {
        l.push("events:".into());
        for e in f.events.iter().rev().take(5).rev() {
            l.push(format!("  {e}"));
        }
    }
    l
}

/// Where frames go.
#[derive(Debug)]
pub struct Screen {
    tty: bool,
    printed_events: usize,
}

impl Screen {
    /// `tty`: redraw in place; else print plain lines.
    pub fn new(tty: bool) -> Self {
        Self {
            tty,
            printed_events: 0,
        }
    }

    /// Shows a frame (TTY), or the new events and a one-line state (plain).
    pub fn show(&mut self, f: &Frame, all_events: &[String]) {
        let mut out = std::io::stdout().lock();
        if self.tty {
            let _ = write!(out, "\x1b[H\x1b[2J{}\r\n", render(f).join("\r\n"));
        } else {
            for e in all_events.iter().skip(self.printed_events) {
                let _ = writeln!(out, "[{:>3}s] {e}", f.elapsed_s);
            }
            let robots: Vec<String> = f
                .robots
                .iter()
                .map(|r| {
                    format!(
                        "{} bat {:.1}% speed {:.2} limit {} mission {}",
                        r.name,
                        r.battery * 100.0,
                        r.speed,
                        r.applied_limit
                            .map(|v| format!("{v:.2}"))
                            .unwrap_or_else(|| "-".into()),
                        r.mission.as_deref().unwrap_or("-")
                    )
                })
                .collect();
            let rate: f64 = f.routes.iter().map(|r| r.rate).sum();
            let _ = writeln!(
                out,
                "[{:>3}s] {} | {} routes, {:.1} msg/s over the bridges",
                f.elapsed_s,
                robots.join(" | "),
                f.routes.len(),
                rate
            );
        }
        self.printed_events = all_events.len();
        let _ = out.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_shortened_for_the_view_only() {
        assert_eq!(short_number("97.44600057601929"), "97.446");
        assert_eq!(short_number("0.5"), "0.5");
        assert_eq!(short_number("1.0"), "1");
        assert_eq!(short_number("42"), "42");
        assert_eq!(short_number("false"), "false");
        assert_eq!(short_number("-0.018490651525053362"), "-0.018");
    }

    #[test]
    fn rates_come_from_count_differences() {
        let mut r = Rates::default();
        assert_eq!(r.rate("a", 10, 1.0), 0.0);
        assert_eq!(r.rate("a", 30, 3.0), 10.0);
        assert_eq!(r.rate("a", 30, 3.0), 0.0);
    }

    #[test]
    fn a_frame_shows_robots_routes_and_twins() {
        let f = Frame {
            elapsed_s: 7,
            robots: vec![RobotState {
                name: "robot1".into(),
                domain: 41,
                battery: 0.5,
                applied_limit: Some(0.3),
                mission: Some("robot1-m1".into()),
                ..RobotState::default()
            }],
            routes: vec![RouteRow {
                bridge: "hub".into(),
                route: "ROS:/fleet_status -> cloud:/robot1/fleet_status".into(),
                messages: 12,
                dropped: 0,
                rate: 1.0,
            }],
            twins: vec![(
                "default/robot1".into(),
                Some("online".into()),
                vec![("speed-limit".into(), "0.3".into(), "0.3".into())],
            )],
            ..Frame::default()
        };
        let text = render(&f).join("\n");
        assert!(text.contains("t = 7 s"));
        assert!(text.contains("robot1  domain 41"), "{text}");
        assert!(text.contains("limit 0.30"));
        assert!(text.contains("cloud:/robot1/fleet_status"));
        assert!(text.contains("1.0/s"));
        assert!(text.contains("[online] speed-limit=0.3/0.3"));
        assert!(!text.contains("events:"));
    }
}
