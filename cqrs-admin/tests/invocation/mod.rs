//! Running the `cqrs-admin` binary the way a person or a script does, and what both backends'
//! tests check about its answers. Each test binary uses part of it.
#![allow(dead_code)]

use std::process::{Command, Stdio};
use std::time::SystemTime;

use cqrs_core::processor::{DeadLetter, EventRef, Failure, FailureKind};
use cqrs_core::{Position, Version};
use serde_json::{Value, json};

/// How the tool is told which database to open.
pub(crate) enum Database {
    /// With `--database VALUE`.
    Flag(String),
    /// With the `DATABASE_URL` environment variable.
    Env(String),
    /// Not at all (the calls to a service).
    None,
}

/// What one run of the tool did.
#[derive(Debug)]
pub(crate) struct Run {
    /// Its exit code (`None`: killed by a signal).
    pub(crate) code: Option<i32>,
    /// What it printed on stdout.
    pub(crate) stdout: String,
    /// What it printed on stderr.
    pub(crate) stderr: String,
}

impl Run {
    /// Every line of stdout as JSON.
    pub(crate) fn json_lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|line| {
                serde_json::from_str(line)
                    .unwrap_or_else(|error| panic!("not JSON ({error}): {line}\n{self:?}"))
            })
            .collect()
    }

    /// Stdout as one JSON object.
    pub(crate) fn json(&self) -> Value {
        let lines = self.json_lines();
        assert_eq!(lines.len(), 1, "one object expected: {self:?}");
        lines.into_iter().next().unwrap_or_default()
    }

    /// Panics unless the run exited with `code`.
    pub(crate) fn expect(self, code: i32) -> Self {
        assert_eq!(self.code, Some(code), "{self:?}");
        self
    }
}

/// The binary, with the database set as `database` says.
pub(crate) fn command(database: &Database) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cqrs-admin"));
    command
        .env_remove("DATABASE_URL")
        .env_remove("CQRS_ADMIN_SERVICE")
        .env_remove("CQRS_ADMIN_SERVICE_HEADER");
    match database {
        Database::Flag(value) => {
            command.args(["--database", value]);
        }
        Database::Env(value) => {
            command.env("DATABASE_URL", value);
        }
        Database::None => {}
    }
    command
}

/// Runs the binary with `args` and waits for it.
pub(crate) fn admin(database: &Database, args: &[&str]) -> Run {
    let output = command(database)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|error| panic!("run cqrs-admin: {error}"));
    Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// The processor whose checkpoint and dead letter the tests store by hand.
pub(crate) const PROCESSOR: &str = "reserved_seats";

/// Its checkpoint: two events behind the sample's head (7).
pub(crate) const CHECKPOINT: u64 = 5;

/// Its one dead letter: version 2 of `show-1`, at position 3.
pub(crate) fn dead_letter() -> DeadLetter {
    DeadLetter::new(
        PROCESSOR,
        Failure {
            kind: FailureKind::Handler,
            event: Some(EventRef {
                position: Position(3),
                stream: "show-1".to_owned(),
                version: Some(Version(2)),
                event_type: Some("SeatsReserved".to_owned()),
                event_id: None,
            }),
            subject: None,
            attempts: 3,
            error: "the seat is gone".to_owned(),
            at: SystemTime::now(),
        },
    )
}

/// Checks every listing command's `--json` output against what `cqrs_tests::admin::write_sample`
/// wrote, [`PROCESSOR`]'s checkpoint and its [`dead_letter`].
pub(crate) fn every_listing_matches_what_was_written(database: &Database) {
    // streams
    let streams = admin(database, &["streams", "--json"])
        .expect(0)
        .json_lines();
    let expected: Vec<Value> = cqrs_tests::admin::sample_streams()
        .into_iter()
        .map(|summary| {
            json!({
                "stream": summary.stream,
                "version": summary.version.0,
                "events": summary.events,
                "last_position": summary.last_position.map(|position| position.0),
            })
        })
        .collect();
    assert_eq!(streams, expected);
    let shows = admin(database, &["streams", "--category", "show", "--json"]).expect(0);
    assert_eq!(shows.json_lines(), expected[1..]);
    let paged = admin(
        database,
        &["--json", "streams", "--after", "order-1", "--limit", "1"],
    );
    assert_eq!(paged.expect(0).json_lines(), expected[1..2]);

    // stream, without then with payloads
    let events = admin(database, &["stream", "show-1", "--json"])
        .expect(0)
        .json_lines();
    let fields = |events: &[Value], field: &str| -> Vec<Value> {
        events.iter().map(|event| event[field].clone()).collect()
    };
    assert_eq!(fields(&events, "version"), [json!(1), json!(2), json!(3)]);
    assert_eq!(fields(&events, "position"), [json!(1), json!(3), json!(5)]);
    assert_eq!(
        fields(&events, "event_type"),
        [
            json!("Scheduled"),
            json!("SeatsReserved"),
            json!("SeatsReserved")
        ]
    );
    assert!(events.iter().all(|event| event["stream"] == "show-1"));
    assert!(events.iter().all(|event| event.get("payload").is_none()));
    assert!(events.iter().all(|event| {
        event["occurred_at"]
            .as_str()
            .is_some_and(|at| at.ends_with('Z'))
    }));
    let with_payloads = admin(database, &["stream", "show-1", "--payloads", "--json"]).expect(0);
    assert_eq!(
        fields(&with_payloads.json_lines(), "payload"),
        [json!({"n": 0}), json!({"n": 2}), json!({"n": 4})]
    );
    let table = admin(database, &["stream", "show-1"]).expect(0);
    assert!(
        !table.stdout.contains("\"n\""),
        "payloads are hidden: {table:?}"
    );
    assert!(table.stdout.starts_with("POSITION"), "{table:?}");

    // tail
    let log = admin(database, &["tail", "--json"]).expect(0).json_lines();
    assert_eq!(
        fields(&log, "position"),
        (1..=7).map(|p| json!(p)).collect::<Vec<_>>()
    );
    let filtered = admin(
        database,
        &[
            "tail",
            "--after",
            "3",
            "--category",
            "show",
            "--type",
            "SeatsReserved",
            "--json",
        ],
    )
    .expect(0)
    .json_lines();
    assert_eq!(fields(&filtered, "position"), [json!(5), json!(6)]);
    assert_eq!(
        fields(&filtered, "stream"),
        [json!("show-1"), json!("show-2")]
    );

    // processors and dead letters
    let processors = admin(database, &["processors", "--json"])
        .expect(0)
        .json_lines();
    assert_eq!(
        processors,
        [
            json!({"name": PROCESSOR, "checkpoint": CHECKPOINT, "behind": 7 - CHECKPOINT, "dead_letters": 1})
        ]
    );
    let letters = admin(database, &["dead-letters", PROCESSOR, "--json"])
        .expect(0)
        .json_lines();
    assert_eq!(letters.len(), 1, "{letters:?}");
    let letter = &letters[0];
    assert_eq!(
        (
            &letter["id"],
            &letter["position"],
            &letter["stream"],
            &letter["version"]
        ),
        (&json!("3"), &json!(3), &json!("show-1"), &json!(2))
    );
    assert_eq!(
        (
            &letter["kind"],
            &letter["attempts"],
            &letter["error"],
            &letter["event_type"]
        ),
        (
            &json!("handler"),
            &json!(3),
            &json!("the seat is gone"),
            &json!("SeatsReserved")
        )
    );
    let none = admin(database, &["dead-letters", "nobody", "--json"]).expect(0);
    assert_eq!(none.stdout, "");

    // check and migrate on the clean, migrated store
    let report = admin(database, &["check", "--json"]).expect(0).json();
    assert_eq!(report["clean"], true);
    assert_eq!(
        (&report["head"], &report["events"], &report["streams"]),
        (&json!(7), &json!(7), &json!(3))
    );
    let migrate = admin(database, &["migrate", "--json"]).expect(0).json();
    assert_eq!(migrate, json!({"pending": [], "applied": []}));
}

/// Checks that `check` names the row `cqrs_tests::admin::write_sample` wrote at version 2 of
/// `show-1` (position 3), once it was deleted: exit 1, in JSON and in the table.
pub(crate) fn check_names_the_deleted_row(database: &Database) {
    let report = admin(database, &["check", "--json"]).expect(1).json();
    assert_eq!(report["clean"], false);
    assert_eq!(report["position_holes"], json!([{"from": 3, "to": 3}]));
    assert_eq!(
        report["version_breaks"],
        json!([{"stream": "show-1", "expected": 2, "found": 3}])
    );
    let table = admin(database, &["check"]).expect(1);
    assert!(table.stdout.contains("position 3 is missing"), "{table:?}");
    assert!(
        table
            .stdout
            .contains("stream `show-1` is missing version 2"),
        "{table:?}"
    );
}

/// A `tail --follow` running in the background, its stdout read line by line.
pub(crate) struct Follower {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Follower {
    /// Starts `cqrs-admin tail --follow --json` with `args` after it.
    pub(crate) fn start(database: &Database, args: &[&str]) -> Self {
        use std::io::BufRead as _;
        let mut child = command(database)
            .args(["tail", "--follow", "--json"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|error| panic!("spawn cqrs-admin: {error}"));
        let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
        let (sender, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Follower { child, lines }
    }

    /// The position of the next event it prints (waiting up to 20 s for it).
    pub(crate) fn next_position(&self) -> u64 {
        let line = self
            .lines
            .recv_timeout(std::time::Duration::from_secs(20))
            .unwrap_or_else(|error| panic!("no line from tail --follow: {error}"));
        let event: Value = serde_json::from_str(&line).unwrap_or_else(|error| panic!("{error}"));
        event["position"]
            .as_u64()
            .unwrap_or_else(|| panic!("no position: {line}"))
    }

    /// Sends it Ctrl-C (SIGINT) and returns its exit code and what it printed to stderr.
    pub(crate) fn interrupt(self) -> (Option<i32>, String) {
        let pid = self.child.id().to_string();
        let killed = Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap_or_else(|error| panic!("kill: {error}"));
        assert!(killed.success());
        let output = self
            .child
            .wait_with_output()
            .unwrap_or_else(|error| panic!("wait for cqrs-admin: {error}"));
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        (output.status.code(), stderr)
    }
}
