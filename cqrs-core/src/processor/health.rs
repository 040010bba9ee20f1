//! One readiness check over every processor a service runs.

use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::sync::watch;

use super::handle::ProcessorHandle;
use super::status::{ProcessorState, ProcessorStatus};

/// Watches the processors a service started and says whether they are healthy, for a readiness
/// probe.
///
/// A processor is healthy when it is live, catching up, standing by for another node, paused,
/// or reconnecting for a while; it is unhealthy when it is stopped, failed at an event, or its
/// checkpoint has not moved for [`stall_after`](HealthCheck::stall_after) while events wait for
/// it (whatever the reason: a store that stays down, an event retried for ever).
#[derive(Debug, Clone)]
pub struct HealthCheck {
    watched: Vec<watch::Receiver<ProcessorStatus>>,
    stall_after: Duration,
}

impl Default for HealthCheck {
    fn default() -> Self {
        Self::new()
    }
}

impl HealthCheck {
    /// A check of no processors yet, calling a processor stalled after 60 s.
    pub fn new() -> Self {
        HealthCheck {
            watched: Vec::new(),
            stall_after: Duration::from_secs(60),
        }
    }

    /// How long a processor's checkpoint may stand still while events wait before it counts as
    /// unhealthy.
    #[must_use]
    pub fn stall_after(mut self, stall_after: Duration) -> Self {
        self.stall_after = stall_after;
        self
    }

    /// Adds the processor of `handle`.
    #[must_use]
    pub fn with(mut self, handle: &ProcessorHandle) -> Self {
        self.watch(handle);
        self
    }

    /// Adds the processor of `handle`.
    pub fn watch(&mut self, handle: &ProcessorHandle) {
        self.watched.push(handle.status_updates());
    }

    /// The health of every watched processor, now.
    pub fn check(&self) -> Health {
        let now = SystemTime::now();
        let processors: Vec<ProcessorHealth> = self
            .watched
            .iter()
            .map(|status| {
                let mut status = status.borrow().clone();
                status.refresh(now);
                ProcessorHealth::of(status, now, self.stall_after)
            })
            .collect();
        Health {
            healthy: processors.iter().all(|processor| processor.healthy),
            processors,
        }
    }
}

/// What [`HealthCheck::check`] found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Health {
    /// Whether every processor is healthy.
    pub healthy: bool,
    /// Each processor's verdict and status.
    pub processors: Vec<ProcessorHealth>,
}

impl Default for Health {
    /// The health of no processors: healthy.
    fn default() -> Self {
        Health {
            healthy: true,
            processors: Vec::new(),
        }
    }
}

/// One processor's verdict.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProcessorHealth {
    /// Whether it is healthy.
    pub healthy: bool,
    /// Why not, when it is not.
    pub reason: Option<String>,
    /// Its status.
    pub status: ProcessorStatus,
}

impl ProcessorHealth {
    fn of(status: ProcessorStatus, now: SystemTime, stall_after: Duration) -> Self {
        let stalled = status.stalled_for(now);
        let reason = match &status.state {
            ProcessorState::Stopped => Some("stopped".to_owned()),
            ProcessorState::Failed => Some(format!(
                "failed{}",
                status
                    .last_error
                    .as_ref()
                    .map(|failure| format!(": {failure}"))
                    .unwrap_or_default()
            )),
            ProcessorState::Reconnecting {
                since, last_error, ..
            } if now.duration_since(*since).unwrap_or(Duration::ZERO) > stall_after => Some(
                format!("its store has been failing for more than {stall_after:?}: {last_error}"),
            ),
            _ if stalled > stall_after => Some(format!(
                "its checkpoint has not moved for {stalled:?} while {} events wait",
                status.lag
            )),
            _ => None,
        };
        ProcessorHealth {
            healthy: reason.is_none(),
            reason,
            status,
        }
    }
}
