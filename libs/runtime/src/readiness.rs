//! The readiness latch: a process is ready only once every registered dependency (NATS, Postgres,
//! streams, migrations, ...) said so, and never again once shutdown has started.
//!
//! Both `grpc.health.v1` (see [`crate::grpc`]) and the admin `/readyz` (see [`crate::admin`]) read it.

use std::fmt;
use std::sync::Arc;

use tokio::sync::watch;

/// A cheap-to-clone handle on the process's readiness.
#[derive(Clone)]
pub struct Readiness {
    state: Arc<watch::Sender<State>>,
}

/// One dependency's slot in a [`Readiness`]; starts not ready.
#[derive(Clone)]
pub struct Dependency {
    readiness: Readiness,
    index: usize,
}

/// What readiness reports at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadinessStatus {
    /// Every dependency is ready and shutdown has not started.
    Ready,
    /// These dependencies (registration order) are not ready yet.
    Waiting(Vec<String>),
    /// Shutdown has started; the process will not be ready again.
    ShuttingDown,
}

impl ReadinessStatus {
    /// Returns whether the process should receive traffic.
    pub fn is_ready(&self) -> bool {
        matches!(self, Self::Ready)
    }
}

impl fmt::Display for ReadinessStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ready => f.write_str("ready"),
            Self::Waiting(pending) => write!(f, "not ready: waiting for {}", pending.join(", ")),
            Self::ShuttingDown => f.write_str("not ready: shutting down"),
        }
    }
}

#[derive(Default)]
struct State {
    dependencies: Vec<(String, bool)>,
    shutting_down: bool,
}

impl State {
    fn status(&self) -> ReadinessStatus {
        if self.shutting_down {
            return ReadinessStatus::ShuttingDown;
        }
        let pending: Vec<String> = self
            .dependencies
            .iter()
            .filter(|(_, ready)| !ready)
            .map(|(name, _)| name.clone())
            .collect();
        if pending.is_empty() {
            ReadinessStatus::Ready
        } else {
            ReadinessStatus::Waiting(pending)
        }
    }
}

impl Default for Readiness {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Readiness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Readiness").field(&self.status()).finish()
    }
}

impl Readiness {
    /// Returns a latch with no dependency yet (ready until one is registered).
    pub fn new() -> Self {
        Self {
            state: Arc::new(watch::Sender::new(State::default())),
        }
    }

    /// Registers a dependency named `name` (e.g. `"nats"`), not ready until
    /// [`Dependency::set_ready`]. Register every dependency before serving.
    pub fn register(&self, name: impl Into<String>) -> Dependency {
        let mut index = 0;
        self.state.send_modify(|state| {
            index = state.dependencies.len();
            state.dependencies.push((name.into(), false));
        });
        Dependency {
            readiness: self.clone(),
            index,
        }
    }

    /// Returns the current status.
    pub fn status(&self) -> ReadinessStatus {
        self.state.borrow().status()
    }

    /// Returns whether the process should receive traffic now.
    pub fn is_ready(&self) -> bool {
        self.status().is_ready()
    }

    /// Marks shutdown as started: readiness is lost for good. Idempotent.
    pub fn begin_shutdown(&self) {
        self.state
            .send_if_modified(|state| !std::mem::replace(&mut state.shutting_down, true));
    }

    /// Returns a watcher that yields the status whenever it may have changed.
    pub fn watch(&self) -> ReadinessWatch {
        ReadinessWatch {
            receiver: self.state.subscribe(),
        }
    }

    fn set(&self, index: usize, ready: bool) {
        self.state.send_if_modified(|state| {
            let slot = &mut state.dependencies[index].1;
            let changed = *slot != ready;
            *slot = ready;
            changed
        });
    }
}

/// Follows a [`Readiness`] over time.
#[derive(Debug)]
pub struct ReadinessWatch {
    receiver: watch::Receiver<State>,
}

impl ReadinessWatch {
    /// Returns the current status and marks it seen.
    pub fn current(&mut self) -> ReadinessStatus {
        self.receiver.borrow_and_update().status()
    }

    /// Waits until the status may have changed since it was last seen, then returns it.
    pub async fn changed(&mut self) -> ReadinessStatus {
        // NOTE: the sender lives as long as any `Readiness` clone, and this watcher's owner holds
        // one, so `changed` cannot fail while anyone could still change the status.
        if self.receiver.changed().await.is_err() {
            return ReadinessStatus::ShuttingDown;
        }
        self.current()
    }
}

impl fmt::Debug for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.status(), f)
    }
}

impl fmt::Debug for Dependency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.readiness.state.borrow();
        let (name, ready) = &state.dependencies[self.index];
        f.debug_struct("Dependency")
            .field("name", name)
            .field("ready", ready)
            .finish()
    }
}

impl Dependency {
    /// Marks this dependency ready (e.g. connected, migrated).
    pub fn set_ready(&self) {
        self.readiness.set(self.index, true);
    }

    /// Marks this dependency not ready again (e.g. a consumer stopped on a fatal error).
    pub fn set_not_ready(&self) {
        self.readiness.set(self.index, false);
    }
}

#[cfg(test)]
mod tests {
    use super::{Readiness, ReadinessStatus};

    #[test]
    fn ready_only_when_every_dependency_is_and_never_after_shutdown() {
        let readiness = Readiness::new();
        let nats = readiness.register("nats");
        let postgres = readiness.register("postgres");
        assert_eq!(
            readiness.status(),
            ReadinessStatus::Waiting(vec!["nats".into(), "postgres".into()])
        );
        nats.set_ready();
        assert_eq!(
            readiness.status().to_string(),
            "not ready: waiting for postgres"
        );
        postgres.set_ready();
        assert!(readiness.is_ready());
        postgres.set_not_ready();
        assert!(!readiness.is_ready());
        postgres.set_ready();
        readiness.begin_shutdown();
        assert_eq!(readiness.status(), ReadinessStatus::ShuttingDown);
        nats.set_ready();
        assert!(!readiness.is_ready());
    }

    #[tokio::test]
    async fn watch_sees_each_change() {
        let readiness = Readiness::new();
        let nats = readiness.register("nats");
        let mut watch = readiness.watch();
        assert!(!watch.current().is_ready());
        nats.set_ready();
        assert_eq!(watch.changed().await, ReadinessStatus::Ready);
        readiness.begin_shutdown();
        assert_eq!(watch.changed().await, ReadinessStatus::ShuttingDown);
    }
}
