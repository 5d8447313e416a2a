//! NATS JetStream publishing and consuming: acked publishes with dedupe ids, ack-guard consumers, dead letters, outbox relay.
