//! The event types a tenant can subscribe to, as stored (`job.succeeded`) and as the API names them
//! (`WebhookEventType`).

use trustmesh_proto::v1::WebhookEventType;

/// Every deliverable event type, in API order.
pub(crate) const ALL: [WebhookEventType; 6] = [
    WebhookEventType::DatasetIngested,
    WebhookEventType::DatasetFailed,
    WebhookEventType::JobSucceeded,
    WebhookEventType::JobFailed,
    WebhookEventType::JobCancelled,
    WebhookEventType::DeletionCompleted,
];

/// The Standard Webhooks `type` of `kind`; `None` for UNSPECIFIED.
pub(crate) fn type_name(kind: WebhookEventType) -> Option<&'static str> {
    Some(match kind {
        WebhookEventType::DatasetIngested => "dataset.ingested",
        WebhookEventType::DatasetFailed => "dataset.failed",
        WebhookEventType::JobSucceeded => "job.succeeded",
        WebhookEventType::JobFailed => "job.failed",
        WebhookEventType::JobCancelled => "job.cancelled",
        WebhookEventType::DeletionCompleted => "deletion.completed",
        WebhookEventType::Unspecified => return None,
    })
}

/// The API value of a stored type name.
pub(crate) fn from_name(name: &str) -> WebhookEventType {
    ALL.into_iter()
        .find(|kind| type_name(*kind) == Some(name))
        .unwrap_or(WebhookEventType::Unspecified)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for kind in ALL {
            assert_eq!(from_name(type_name(kind).unwrap()), kind);
        }
        assert_eq!(type_name(WebhookEventType::Unspecified), None);
        assert_eq!(from_name("scores.ready"), WebhookEventType::Unspecified);
    }
}
