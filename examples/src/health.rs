//! One line on the processors' health, as the stories print it at the end of a run.

use cqrs_core::processor::Health;

/// `Health: every processor is healthy (available_seats: Live at 42, lag 0, 0 dead letters).`,
/// or what is wrong.
pub fn describe_health(health: &Health) -> String {
    let processors: Vec<String> = health
        .processors
        .iter()
        .map(|processor| {
            let status = &processor.status;
            let line = format!(
                "{}: {:?} at {}, lag {}, {} dead letters",
                status.name, status.state, status.checkpoint, status.lag, status.dead_letters
            );
            match &processor.reason {
                Some(reason) => format!("{line}: {reason}"),
                None => line,
            }
        })
        .collect();
    let verdict = if health.healthy {
        "every processor is healthy"
    } else {
        "a processor is unhealthy"
    };
    format!("Health: {verdict} ({}).", processors.join("; "))
}
