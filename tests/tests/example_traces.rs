//! The examples' traces: with `RUST_LOG=info` the seat-reservation story prints one line per
//! command with its attempts and outcome; without `RUST_LOG` nothing is installed.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use cqrs_core::telemetry::COMMAND_SPAN;
use cqrs_examples::{seat_reservation, traces};
use cqrs_memstore::MemStore;
use tracing::Subscriber;
use tracing::span::Id;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

/// Where the example's layer writes, readable by the test.
#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl io::Write for Buffer {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Counts the command spans that closed: one per command the story ran.
#[derive(Clone, Default)]
struct Commands(Arc<AtomicUsize>);

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Commands {
    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        if ctx
            .span(&id)
            .is_some_and(|span| span.name() == COMMAND_SPAN)
        {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[test]
fn with_rust_log_info_the_story_prints_one_line_per_command() {
    let buffer = Buffer::default();
    let commands = Commands::default();
    let filter = traces::filter(Some("info"))
        .expect("set")
        .expect("a valid filter");
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::registry()
        .with(traces::lines(move || writer.clone()).with_filter(filter))
        .with(commands.clone());
    // The story on one thread, so that every task it spawns sees this subscriber.
    let _default = tracing::subscriber::set_default(subscriber);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let mut story = Vec::new();
    runtime
        .block_on(seat_reservation::run(MemStore::new(), &mut story))
        .expect("the story runs");

    let text = String::from_utf8(buffer.0.lock().expect("not poisoned").clone()).expect("utf-8");
    let command_lines: Vec<&str> = text
        .lines()
        .filter(|line| line.contains("command.handle{"))
        .collect();
    let ran = commands.0.load(Ordering::SeqCst);
    println!(
        "{ran} commands, {} command lines, {} lines in all; e.g.\n{}",
        command_lines.len(),
        text.lines().count(),
        command_lines.first().copied().unwrap_or_default()
    );
    assert!(ran > 20, "the story runs many commands: {ran}");
    assert_eq!(command_lines.len(), ran, "one line per command:\n{text}");
    for line in &command_lines {
        assert!(
            line.contains(" INFO ") || line.contains(" WARN "),
            "at INFO, or WARN when it failed: {line}"
        );
        assert!(
            line.contains("cqrs.attempts=") && line.contains("cqrs.outcome="),
            "every command line has its attempts and outcome: {line}"
        );
    }
    assert!(
        command_lines
            .iter()
            .any(|line| line.contains("cqrs.outcome=\"domain_error\"")),
        "the sold-out walk-ins are refused: {text}"
    );
    assert!(
        !text.contains("DEBUG"),
        "RUST_LOG=info shows no store calls or retries"
    );
    // The story's own output goes elsewhere: the traces never reach it.
    let story = String::from_utf8(story).expect("utf-8");
    assert!(!story.contains("command.handle"), "{story}");
}

#[test]
fn without_rust_log_nothing_is_installed() {
    assert!(traces::filter(None).is_none());
    assert!(traces::filter(Some("  ")).is_none());
    assert!(matches!(traces::filter(Some("info")), Some(Ok(_))));
    assert!(matches!(
        traces::filter(Some("cqrs_core=debug,warn")),
        Some(Ok(_))
    ));
    assert!(
        matches!(traces::filter(Some("cqrs_core=[{")), Some(Err(_))),
        "a filter that does not parse is reported, not used"
    );
}
