//! Interactive input: lines from stdin (when it is a TTY) become commands.

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// A parsed input line.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// `robot1 speed-limit 0.3`: set a desired twin value.
    SetDesired {
        robot: String,
        property: String,
        value: String,
    },
    Help,
    Quit,
    Empty,
}

/// What `help` prints.
pub const HELP: &str = "commands: `<robot> <property> <value>` sets a desired twin value \
(e.g. `robot1 speed-limit 0.3`, `robot2 lamp true`); `quit` ends the demo";

/// Parses one line.
pub fn parse(line: &str) -> Result<Command, String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    match words[..] {
        [] => Ok(Command::Empty),
        ["help" | "?"] => Ok(Command::Help),
        ["quit" | "exit" | "q"] => Ok(Command::Quit),
        [robot, property, value] => Ok(Command::SetDesired {
            robot: robot.to_owned(),
            property: property.to_owned(),
            value: value.to_owned(),
        }),
        _ => Err(format!("not understood: {line:?}; {HELP}")),
    }
}

/// Reads stdin lines into `tx` until EOF or shutdown (a plain thread: a blocking read of a
/// terminal cannot be cancelled; the thread ends with the process or at EOF).
pub fn spawn_reader(tx: mpsc::Sender<String>, shutdown: CancellationToken) {
    let _ = std::thread::Builder::new()
        .name("demo-stdin".into())
        .spawn(move || {
            for line in std::io::stdin().lines() {
                let Ok(line) = line else { break };
                if shutdown.is_cancelled() || tx.blocking_send(line).is_err() {
                    break;
                }
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse() {
        assert_eq!(
            parse(" robot1  speed-limit 0.3 "),
            Ok(Command::SetDesired {
                robot: "robot1".into(),
                property: "speed-limit".into(),
                value: "0.3".into()
            })
        );
        assert_eq!(parse("quit"), Ok(Command::Quit));
        assert_eq!(parse(""), Ok(Command::Empty));
        assert_eq!(parse("help"), Ok(Command::Help));
        assert!(parse("robot1 speed-limit").is_err());
    }
}
