//! The dispatcher: sends due deliveries, signed, through the guarded client, and schedules retries
//! on the `backon` exponential schedule with jitter (bounded attempts). The `webhook-id` is the
//! same on every attempt; `webhook-timestamp` is each attempt's. 2xx succeeds; HTTP 410 disables
//! the endpoint; a refusal by the SSRF guard fails the delivery without retry.
//!
//! Each attempt runs in a `webhook.deliver` span continuing the trace the delivery was queued in
//! (stored on its row: the dispatcher polls, so no message carries it here), and the request sends
//! that span's `traceparent`, so the receiver can join the trace.

use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder as _, ExponentialBuilder};
use time::OffsetDateTime;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;
use trustmesh_telemetry::{WebhookMetrics, WebhookOutcome};
use trustmesh_webhooks::{Answer, Outbound, SendError, WebhookClient};

use super::deliveries::{AttemptOutcome, Deliveries, DeliveryRow};
use super::endpoints::Endpoints;
use crate::settings::WebhookSettings;

/// Deliveries leased per round.
const BATCH: i64 = 16;

/// When retry `n` (after the `n`-th failed attempt) is due: the `backon` schedule, bounded.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RetrySchedule {
    builder: ExponentialBuilder,
    /// The longest delay, which also caps a `Retry-After`.
    max_delay: Duration,
}

impl RetrySchedule {
    pub(crate) fn new(settings: &WebhookSettings) -> Self {
        let retries = settings.max_attempts.saturating_sub(1) as usize;
        let max_delay = Duration::from_millis(settings.max_retry_delay_ms);
        Self {
            max_delay,
            builder: ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(settings.first_retry_delay_ms))
                .with_max_delay(max_delay)
                .with_factor(2.0)
                .with_jitter()
                .with_max_times(retries),
        }
    }

    /// The delay before the attempt after attempt `attempt` (1-based); `None` when attempts are
    /// exhausted.
    pub(crate) fn after(&self, attempt: u32) -> Option<Duration> {
        let index = usize::try_from(attempt.checked_sub(1)?).ok()?;
        self.builder.build().nth(index)
    }
}

/// Sends due deliveries until shutdown.
#[derive(Debug, Clone)]
pub(crate) struct Dispatcher {
    pub(crate) deliveries: Deliveries,
    pub(crate) endpoints: Endpoints,
    pub(crate) client: WebhookClient,
    pub(crate) schedule: RetrySchedule,
    pub(crate) wake: Arc<Notify>,
    pub(crate) poll: Duration,
    pub(crate) lease: Duration,
}

impl Dispatcher {
    /// Runs until `shutdown`; a database error is logged and retried on the next round.
    pub(crate) async fn run(self, shutdown: CancellationToken) {
        loop {
            let wait = match self.round().await {
                Ok(0) => self.idle_wait().await,
                Ok(_) => Duration::ZERO,
                Err(error) => {
                    tracing::warn!(error = %error, "Webhook dispatch round failed; retrying.");
                    self.poll
                }
            };
            if wait.is_zero() {
                if shutdown.is_cancelled() {
                    return;
                }
                continue;
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// How long to sleep with nothing due: until the next due delivery, at most one poll interval.
    async fn idle_wait(&self) -> Duration {
        match self.deliveries.next_due().await {
            Ok(Some(at)) => {
                let until = at - OffsetDateTime::now_utc();
                Duration::try_from(until)
                    .unwrap_or(Duration::from_millis(1))
                    .clamp(Duration::from_millis(1), self.poll)
            }
            Ok(None) | Err(_) => self.poll,
        }
    }

    /// Leases and attempts the due deliveries; returns how many.
    async fn round(&self) -> Result<usize, sqlx::Error> {
        let due = self
            .deliveries
            .claim_due(BATCH, self.lease.as_secs_f64())
            .await?;
        let count = due.len();
        let attempts = due.into_iter().map(|d| self.attempt(d));
        for result in futures::future::join_all(attempts).await {
            result?;
        }
        Ok(count)
    }

    async fn attempt(&self, delivery: DeliveryRow) -> Result<(), sqlx::Error> {
        let attempt = u32::try_from(delivery.attempt_count).unwrap_or_default() + 1;
        let span = tracing::info_span!(
            "webhook.deliver",
            tenant.id = %delivery.tenant,
            webhook.delivery = %delivery.id,
            webhook.event_type = %delivery.event_type,
            webhook.attempt = attempt,
            trace_id = tracing::field::Empty,
        );
        trustmesh_telemetry::continue_trace(&span, &delivery.trace_context());
        async {
            let outcome = self.send(&delivery, attempt).await;
            WebhookMetrics::attempt(outcome.metric);
            tracing::info!(
                webhook.state = outcome.state,
                http.status = outcome.http_status,
                "Webhook attempt made."
            );
            self.deliveries
                .record_attempt(
                    delivery.id,
                    i32::try_from(attempt).unwrap_or(i32::MAX),
                    &outcome,
                )
                .await
        }
        .instrument(span)
        .await
    }

    async fn send(&self, delivery: &DeliveryRow, attempt: u32) -> AttemptOutcome {
        let endpoint = match self.endpoints.by_id(delivery.endpoint).await {
            Ok(Some(endpoint)) if !endpoint.disabled => endpoint,
            Ok(Some(_) | None) => {
                return failed(
                    0,
                    "the endpoint is disabled".to_owned(),
                    WebhookOutcome::Failed,
                );
            }
            Err(error) => return self.retry(attempt, 0, format!("internal: {error}")),
        };
        let Ok(secret) = self.endpoints.secret(&endpoint).await else {
            let error = "internal: the secret could not be opened".to_owned();
            return self.retry(attempt, 0, error);
        };
        let id = delivery.webhook_id();
        let message = Outbound {
            id: &id,
            timestamp: OffsetDateTime::now_utc().unix_timestamp(),
            body: delivery.payload.as_bytes(),
        };
        match self.client.send(&endpoint.url, message, &secret).await {
            Ok(answer) if (200..300).contains(&answer.status) => AttemptOutcome {
                state: "succeeded",
                http_status: answer.status,
                error: String::new(),
                next_attempt: None,
                metric: WebhookOutcome::Delivered,
            },
            Ok(Answer { status: 410, .. }) => {
                if let Err(error) = self.endpoints.disable_gone(endpoint.id).await {
                    tracing::warn!(error = %error, "An endpoint answering 410 could not be disabled.");
                }
                tracing::info!(tenant.id = %delivery.tenant, webhook.endpoint = %endpoint.id, "Endpoint answered 410 Gone; disabled.");
                failed(
                    410,
                    "HTTP 410: the endpoint is gone and was disabled".to_owned(),
                    WebhookOutcome::Disabled,
                )
            }
            Ok(answer) => {
                let error = format!("HTTP {}", answer.status);
                self.retry_after(attempt, answer.status, error, answer.retry_after)
            }
            Err(error @ SendError::Refused(_)) => {
                failed(0, error.to_string(), WebhookOutcome::Refused)
            }
            Err(error @ (SendError::Timeout | SendError::Connect | SendError::Request)) => {
                self.retry(attempt, 0, error.to_string())
            }
        }
    }

    fn retry(&self, attempt: u32, http_status: u16, error: String) -> AttemptOutcome {
        self.retry_after(attempt, http_status, error, None)
    }

    /// The next attempt on the schedule, or later if the endpoint asked (`Retry-After`, capped at
    /// the schedule's longest delay); FAILED once attempts are exhausted.
    fn retry_after(
        &self,
        attempt: u32,
        http_status: u16,
        error: String,
        asked: Option<Duration>,
    ) -> AttemptOutcome {
        match self.schedule.after(attempt) {
            Some(delay) => {
                let delay =
                    asked.map_or(delay, |asked| delay.max(asked.min(self.schedule.max_delay)));
                AttemptOutcome {
                    state: "pending",
                    http_status,
                    error,
                    next_attempt: Some(
                        OffsetDateTime::now_utc()
                            + time::Duration::try_from(delay).unwrap_or(time::Duration::MAX),
                    ),
                    metric: WebhookOutcome::Retried,
                }
            }
            None => failed(http_status, error, WebhookOutcome::Failed),
        }
    }
}

fn failed(http_status: u16, error: String, metric: WebhookOutcome) -> AttemptOutcome {
    AttemptOutcome {
        state: "failed",
        http_status,
        error,
        next_attempt: None,
        metric,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_doubles_with_jitter_below_the_cap_and_is_bounded() {
        let settings = WebhookSettings {
            max_attempts: 6,
            first_retry_delay_ms: 1_000,
            max_retry_delay_ms: 6_000,
            ..WebhookSettings::default()
        };
        let schedule = RetrySchedule::new(&settings);
        for _ in 0..50 {
            for (attempt, base_ms) in [(1, 1_000), (2, 2_000), (3, 4_000), (4, 6_000), (5, 6_000)] {
                let delay = schedule.after(attempt).expect("a retry is due");
                let base = Duration::from_millis(base_ms);
                assert!(
                    delay >= base && delay <= base * 2,
                    "attempt {attempt}: {delay:?}"
                );
            }
            assert_eq!(schedule.after(6), None, "six attempts in all");
            assert_eq!(schedule.after(0), None);
        }
    }
}
