//! The ack guard: a delivery is acked, nak'ed or terminated exactly once, and nak'ed if forgotten.

use std::fmt;
use std::time::Duration;

use async_nats::jetstream::AckKind;
use async_nats::jetstream::message::Acker;

/// Owns the right to ack one delivery; naks it (immediate redelivery) when dropped unacked, e.g. when
/// the handler panics or its task is aborted.
pub struct AckGuard {
    acker: Option<Acker>,
}

impl fmt::Debug for AckGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AckGuard")
            .field("settled", &self.acker.is_none())
            .finish()
    }
}

impl AckGuard {
    /// Guards the delivery `acker` answers for.
    #[must_use]
    pub fn new(acker: Acker) -> Self {
        Self { acker: Some(acker) }
    }

    /// Acks the delivery and waits for the server to confirm it.
    ///
    /// # Errors
    ///
    /// The client error if the ack was not confirmed; the message may then be redelivered, which an
    /// idempotent consumer absorbs.
    pub async fn ack(mut self) -> Result<(), async_nats::Error> {
        match self.acker.take() {
            Some(acker) => acker.double_ack().await,
            None => Ok(()),
        }
    }

    /// Naks the delivery: the server redelivers it after `delay` (immediately with `None`).
    ///
    /// # Errors
    ///
    /// The client error if the nak could not be sent; the message is then redelivered after the ack wait.
    pub async fn nak(mut self, delay: Option<Duration>) -> Result<(), async_nats::Error> {
        match self.acker.take() {
            Some(acker) => acker.ack_with(AckKind::Nak(delay)).await,
            None => Ok(()),
        }
    }

    /// Terminates the delivery: the server never redelivers it.
    ///
    /// # Errors
    ///
    /// The client error if the server did not confirm it; the message may then be redelivered.
    pub async fn term(mut self) -> Result<(), async_nats::Error> {
        match self.acker.take() {
            Some(acker) => acker.double_ack_with(AckKind::Term).await,
            None => Ok(()),
        }
    }
}

impl Drop for AckGuard {
    fn drop(&mut self) {
        let Some(acker) = self.acker.take() else {
            return;
        };
        // NOTE: Drop cannot await; the nak goes out from a task on the current runtime. Without a
        // runtime (or if the task never runs) the server redelivers after the ack wait instead.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(e) = acker.ack_with(AckKind::Nak(None)).await {
                    tracing::debug!(error = %e, "Could not nak a dropped delivery; it returns after the ack wait.");
                }
            });
        }
    }
}
