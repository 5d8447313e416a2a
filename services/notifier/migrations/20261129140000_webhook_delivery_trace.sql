-- The W3C trace context of the event each delivery was queued for, so the dispatcher's attempts
-- (and the receiver, through the `traceparent` header) continue that trace. Trace and span ids
-- only; NULL for deliveries queued before this migration or outside any trace.

ALTER TABLE webhook_deliveries
    ADD COLUMN traceparent text,
    ADD COLUMN tracestate text;
