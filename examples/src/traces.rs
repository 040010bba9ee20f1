//! Traces for the examples: with `RUST_LOG` set (`RUST_LOG=info`, `RUST_LOG=cqrs_core=debug`),
//! the framework's spans and events are printed to stderr, one line per event; without it
//! nothing is installed and the examples print what they always did.
//!
//! The libraries only emit through `tracing`; a service picks its own subscriber. This is the
//! smallest useful one.

use std::io;

use tracing::Subscriber;
use tracing_subscriber::filter::ParseError;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Prints traces to stderr when `RUST_LOG` asks for them, and says whether it did.
///
/// A `RUST_LOG` that does not parse is reported on stderr and the examples run without traces.
pub fn install_from_env() -> bool {
    let Some(filter) = filter(std::env::var("RUST_LOG").ok().as_deref()) else {
        return false;
    };
    match filter {
        Ok(filter) => tracing_subscriber::registry()
            .with(lines(io::stderr).with_filter(filter))
            .try_init()
            .is_ok(),
        Err(error) => {
            eprintln!("RUST_LOG is not a filter tracing understands ({error}); no traces");
            false
        }
    }
}

/// The filter `RUST_LOG` describes: `None` when it is unset or empty.
pub fn filter(rust_log: Option<&str>) -> Option<Result<EnvFilter, ParseError>> {
    let directives = rust_log.map(str::trim).filter(|value| !value.is_empty())?;
    Some(EnvFilter::builder().parse(directives))
}

/// The layer that prints one line per event to `writer`: time, level, the spans it is in with
/// their fields, its target, message and fields.
pub fn lines<S, W>(writer: W) -> impl Layer<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_ansi(false)
}
