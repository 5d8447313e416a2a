//! Metrics over OTLP: the service's registry, the one `/metrics` renders, is converted to an OTLP
//! `ExportMetricsServiceRequest` every interval (and once more at shutdown) and sent to the
//! collector with the generated `MetricsService` client, so every family stays defined once, in
//! prometheus-client, and reaches both Prometheus and OTLP.
//!
//! The conversion reads the registry's OpenMetrics text: prometheus-client's encoders are closed to
//! other formats, and the SDK's metric data cannot be built outside `opentelemetry_sdk`. Counters
//! become cumulative monotonic sums named without `_total` (the OTLP convention; a collector's
//! Prometheus exporter adds it back), gauges stay gauges, histograms become explicit-bucket
//! histograms; the `service` label stays on every point and the resource carries `service.name`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint};

use crate::{EXPORT_TIMEOUT, Metrics};

/// Sends a service's metrics to an OTLP collector every interval, and once more when stopped.
#[derive(Debug)]
pub(crate) struct MetricsExport {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl MetricsExport {
    /// Starts the export of `metrics` as `service` to the collector at `endpoint` (inside a Tokio
    /// runtime); nothing connects until the first export.
    pub(crate) fn start(
        endpoint: Endpoint,
        interval: Duration,
        service: &str,
        metrics: Metrics,
    ) -> Self {
        let channel = endpoint
            .connect_timeout(EXPORT_TIMEOUT)
            .timeout(EXPORT_TIMEOUT)
            .connect_lazy();
        let mut exporter = Exporter {
            client: MetricsServiceClient::new(channel),
            service: service.to_owned(),
            metrics,
            start: unix_nanos(SystemTime::now()),
        };
        let (stop, mut stopped) = oneshot::channel();
        let task = tokio::spawn(async move {
            // NOTE: `interval` ticks at once; the first export waits one interval like every other.
            let mut ticks =
                tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
            loop {
                // A dropped sender (the guard dropped) stops the export too.
                let last = tokio::select! {
                    _ = ticks.tick() => false,
                    _ = &mut stopped => true,
                };
                exporter.export().await;
                if last {
                    return;
                }
            }
        });
        Self { stop, task }
    }

    /// Exports one last time and stops.
    pub(crate) async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

struct Exporter {
    client: MetricsServiceClient<Channel>,
    service: String,
    metrics: Metrics,
    /// When the cumulative values started, in Unix nanoseconds.
    start: u64,
}

impl Exporter {
    async fn export(&mut self) {
        let now = unix_nanos(SystemTime::now());
        let request = ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(Resource {
                    attributes: vec![string_attribute("service.name", &self.service)],
                    ..Resource::default()
                }),
                scope_metrics: vec![ScopeMetrics {
                    scope: Some(InstrumentationScope {
                        name: env!("CARGO_PKG_NAME").to_owned(),
                        version: env!("CARGO_PKG_VERSION").to_owned(),
                        ..InstrumentationScope::default()
                    }),
                    metrics: to_otlp(&self.metrics.render(), self.start, now),
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        };
        if let Err(status) = self.client.export(request).await {
            tracing::warn!(error = %status, "Exporting metrics over OTLP failed.");
        }
    }
}

fn unix_nanos(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn string_attribute(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_owned())),
        }),
    }
}

/// One family of the OpenMetrics text, with its samples.
#[derive(Default)]
struct Family<'a> {
    name: &'a str,
    kind: &'a str,
    help: &'a str,
    unit: &'a str,
    samples: Vec<Sample<'a>>,
}

/// One sample line: its name's suffix after the family name (`_total`, `_bucket`, ...), labels, value.
struct Sample<'a> {
    suffix: &'a str,
    labels: Vec<(String, String)>,
    value: &'a str,
}

/// The families of `text` (OpenMetrics, as prometheus-client writes it), in order.
fn parse(text: &str) -> Vec<Family<'_>> {
    let mut families: Vec<Family<'_>> = Vec::new();
    for line in text.lines() {
        if let Some(meta) = line.strip_prefix("# ") {
            let mut parts = meta.splitn(3, ' ');
            let (Some(keyword), Some(name)) = (parts.next(), parts.next()) else {
                continue;
            };
            let value = parts.next().unwrap_or_default();
            if families.last().is_none_or(|f| f.name != name) {
                families.push(Family {
                    name,
                    ..Family::default()
                });
            }
            if let Some(family) = families.last_mut() {
                match keyword {
                    "HELP" => family.help = value,
                    "TYPE" => family.kind = value,
                    "UNIT" => family.unit = value,
                    _ => {}
                }
            }
        } else if let Some(family) = families.last_mut()
            && let Some(sample) = parse_sample(line, family.name)
        {
            family.samples.push(sample);
        }
    }
    families
}

/// `name{labels} value` (or `name value`), if `name` is of `family`.
fn parse_sample<'a>(line: &'a str, family: &str) -> Option<Sample<'a>> {
    let end = line.find(['{', ' '])?;
    let suffix = line[..end].strip_prefix(family)?;
    let (labels, rest) = match line[end..].strip_prefix('{') {
        Some(inner) => parse_labels(inner)?,
        None => (Vec::new(), &line[end..]),
    };
    // The value, without an exemplar (` # {...} v`).
    let value = rest.trim_start().split(' ').next()?;
    Some(Sample {
        suffix,
        labels,
        value,
    })
}

/// The `key="value",...` pairs up to the closing `}`, and the text after it.
fn parse_labels(mut rest: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut labels = Vec::new();
    loop {
        if let Some(after) = rest.strip_prefix('}') {
            return Some((labels, after));
        }
        let (key, after) = rest.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let close = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                (_, c) => value.push(c),
            }
        };
        labels.push((key.to_owned(), value));
        rest = &after[close + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
}

/// The registry's OpenMetrics `text` as OTLP metrics, cumulative since `start`, observed `now`
/// (Unix nanoseconds). Families of other types (info, state sets) are left out.
pub(crate) fn to_otlp(text: &str, start: u64, now: u64) -> Vec<Metric> {
    parse(text)
        .into_iter()
        .filter_map(|family| {
            let data = match family.kind {
                "counter" => metric::Data::Sum(Sum {
                    data_points: number_points(&family, "_total", start, now),
                    aggregation_temporality: AggregationTemporality::Cumulative.into(),
                    is_monotonic: true,
                }),
                "gauge" => metric::Data::Gauge(Gauge {
                    data_points: number_points(&family, "", start, now),
                }),
                "histogram" => metric::Data::Histogram(Histogram {
                    data_points: histogram_points(&family, start, now),
                    aggregation_temporality: AggregationTemporality::Cumulative.into(),
                }),
                _ => return None,
            };
            Some(Metric {
                name: family.name.to_owned(),
                description: family.help.to_owned(),
                unit: ucum(family.unit).to_owned(),
                data: Some(data),
                ..Metric::default()
            })
        })
        .collect()
}

/// The UCUM unit OTLP expects for an OpenMetrics unit.
fn ucum(unit: &str) -> &str {
    match unit {
        "seconds" => "s",
        "bytes" => "By",
        other => other,
    }
}

fn attributes(labels: &[(String, String)]) -> Vec<KeyValue> {
    labels
        .iter()
        .map(|(key, value)| string_attribute(key, value))
        .collect()
}

fn number_points(family: &Family<'_>, suffix: &str, start: u64, now: u64) -> Vec<NumberDataPoint> {
    family
        .samples
        .iter()
        .filter(|s| s.suffix == suffix)
        .filter_map(|sample| {
            let value = match sample.value.parse::<i64>() {
                Ok(n) => number_data_point::Value::AsInt(n),
                Err(_) => number_data_point::Value::AsDouble(sample.value.parse().ok()?),
            };
            Some(NumberDataPoint {
                attributes: attributes(&sample.labels),
                start_time_unix_nano: start,
                time_unix_nano: now,
                value: Some(value),
                ..NumberDataPoint::default()
            })
        })
        .collect()
}

/// One point per label set: `_sum`, `_count`, and the cumulative `_bucket{le}` counts turned into
/// per-bucket counts (the `+Inf` bucket is the last count, with no bound).
fn histogram_points(family: &Family<'_>, start: u64, now: u64) -> Vec<HistogramDataPoint> {
    /// A point being built: its labels (without `le`) and the cumulative count of its buckets so far.
    struct Building {
        labels: Vec<(String, String)>,
        point: HistogramDataPoint,
        cumulative: u64,
    }
    let mut points: Vec<Building> = Vec::new();
    for sample in &family.samples {
        let mut labels = sample.labels.clone();
        let le = labels
            .iter()
            .position(|(key, _)| key == "le")
            .map(|i| labels.remove(i).1);
        let index = points
            .iter()
            .position(|b| b.labels == labels)
            .unwrap_or_else(|| {
                let point = HistogramDataPoint {
                    attributes: attributes(&labels),
                    start_time_unix_nano: start,
                    time_unix_nano: now,
                    ..HistogramDataPoint::default()
                };
                points.push(Building {
                    labels,
                    point,
                    cumulative: 0,
                });
                points.len() - 1
            });
        let Building {
            point, cumulative, ..
        } = &mut points[index];
        match (sample.suffix, le) {
            ("_sum", _) => point.sum = sample.value.parse().ok(),
            ("_count", _) => point.count = sample.value.parse().unwrap_or_default(),
            ("_bucket", Some(le)) => {
                let total: u64 = sample.value.parse().unwrap_or_default();
                point.bucket_counts.push(total.saturating_sub(*cumulative));
                *cumulative = total;
                if let Ok(bound) = le.parse::<f64>()
                    && bound.is_finite()
                {
                    point.explicit_bounds.push(bound);
                }
            }
            _ => {}
        }
    }
    points.into_iter().map(|b| b.point).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
# HELP trustmesh_rpc_requests Handled RPCs.
# TYPE trustmesh_rpc_requests counter
trustmesh_rpc_requests_total{service=\"analysis\",method=\"/a.B/C\",code=\"OK\"} 2
# HELP trustmesh_consumer_pending Lag.
# TYPE trustmesh_consumer_pending gauge
trustmesh_consumer_pending{service=\"analysis\",stream=\"S\",consumer=\"c \\\"q\\\"\"} 7
# HELP trustmesh_rpc_duration_seconds RPC handling time.
# TYPE trustmesh_rpc_duration_seconds histogram
# UNIT trustmesh_rpc_duration_seconds seconds
trustmesh_rpc_duration_seconds_sum{service=\"analysis\",method=\"/a.B/C\"} 0.75
trustmesh_rpc_duration_seconds_count{service=\"analysis\",method=\"/a.B/C\"} 3
trustmesh_rpc_duration_seconds_bucket{service=\"analysis\",le=\"0.1\",method=\"/a.B/C\"} 1
trustmesh_rpc_duration_seconds_bucket{service=\"analysis\",le=\"0.5\",method=\"/a.B/C\"} 1
trustmesh_rpc_duration_seconds_bucket{service=\"analysis\",le=\"+Inf\",method=\"/a.B/C\"} 3
# EOF
";

    fn labels(attributes: &[KeyValue]) -> Vec<(&str, &str)> {
        attributes
            .iter()
            .map(|kv| {
                let Some(any_value::Value::StringValue(v)) =
                    kv.value.as_ref().and_then(|v| v.value.as_ref())
                else {
                    panic!("{kv:?}");
                };
                (kv.key.as_str(), v.as_str())
            })
            .collect()
    }

    #[test]
    fn counters_gauges_and_histograms_convert_with_their_labels() {
        let metrics = to_otlp(TEXT, 10, 20);
        let names: Vec<_> = metrics.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "trustmesh_rpc_requests",
                "trustmesh_consumer_pending",
                "trustmesh_rpc_duration_seconds"
            ]
        );

        let Some(metric::Data::Sum(sum)) = &metrics[0].data else {
            panic!("{:?}", metrics[0]);
        };
        assert!(sum.is_monotonic);
        assert_eq!(
            sum.aggregation_temporality,
            i32::from(AggregationTemporality::Cumulative)
        );
        let point = &sum.data_points[0];
        assert_eq!(point.value, Some(number_data_point::Value::AsInt(2)));
        assert_eq!((point.start_time_unix_nano, point.time_unix_nano), (10, 20));
        assert_eq!(
            labels(&point.attributes),
            [
                ("service", "analysis"),
                ("method", "/a.B/C"),
                ("code", "OK")
            ]
        );

        let Some(metric::Data::Gauge(gauge)) = &metrics[1].data else {
            panic!("{:?}", metrics[1]);
        };
        assert_eq!(
            labels(&gauge.data_points[0].attributes)[2],
            ("consumer", "c \"q\"")
        );

        assert_eq!(metrics[2].unit, "s");
        let Some(metric::Data::Histogram(histogram)) = &metrics[2].data else {
            panic!("{:?}", metrics[2]);
        };
        assert_eq!(histogram.data_points.len(), 1, "one point per label set");
        let point = &histogram.data_points[0];
        assert_eq!(
            labels(&point.attributes),
            [("service", "analysis"), ("method", "/a.B/C")]
        );
        assert_eq!((point.count, point.sum), (3, Some(0.75)));
        assert_eq!(point.explicit_bounds, [0.1, 0.5]);
        assert_eq!(point.bucket_counts, [1, 0, 2], "per bucket, not cumulative");
    }

    #[test]
    fn a_real_registry_converts_every_family() {
        let metrics = Metrics::new("otlp-unit");
        metrics
            .rpc()
            .record("/a.B/C", "OK", Duration::from_millis(3));
        let converted = to_otlp(&metrics.render(), 0, 1);
        let types = metrics
            .render()
            .lines()
            .filter(|l| l.starts_with("# TYPE "))
            .count();
        assert_eq!(converted.len(), types);
    }
}
