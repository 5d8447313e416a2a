//! The Prometheus registry behind `/metrics`, and the metric families every service shares.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Metric, Registry, Unit};

/// The `Content-Type` of [`Metrics::render`]'s output (OpenMetrics text, which Prometheus scrapes).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A service's metrics: a registry (every family prefixed `trustmesh_` and labelled with the
/// service) with its RPC families and the process-wide families of `families.rs` (jobs, consumers,
/// webhooks, decrypt failures, audit, deletion). Cheap to clone.
///
/// Labels stay low-cardinality: methods, codes, states; never tenant, dataset or row ids.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Mutex<Registry>,
    rpc: RpcMetrics,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// The registry of `service` in this process, with its RPC families and the process-wide
    /// families registered: created on first use, the same one after. So the telemetry guard's
    /// (which the OTLP export reads) and the host's (which `/metrics` renders) are one.
    pub fn new(service: &str) -> Self {
        static REGISTRIES: LazyLock<Mutex<HashMap<String, Metrics>>> =
            LazyLock::new(Mutex::default);
        REGISTRIES
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(service.to_owned())
            .or_insert_with(|| Self::create(service))
            .clone()
    }

    fn create(service: &str) -> Self {
        let labels = [(Cow::Borrowed("service"), Cow::Owned(service.to_owned()))];
        let mut registry = Registry::with_prefix_and_labels("trustmesh", labels.into_iter());
        let rpc = RpcMetrics::register(&mut registry);
        crate::families::register(&mut registry);
        Self {
            inner: Arc::new(Inner {
                registry: Mutex::new(registry),
                rpc,
            }),
        }
    }

    /// RPC rate, errors and latency per method.
    pub fn rpc(&self) -> &RpcMetrics {
        &self.inner.rpc
    }

    /// Registers a service-specific metric as `trustmesh_<name>` (keep a clone of `metric` to update it).
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        self.lock().register(name, help, metric);
    }

    /// Registers a service-specific metric with a unit suffix (e.g. `_seconds`, `_bytes`).
    pub fn register_with_unit(&self, name: &str, help: &str, unit: Unit, metric: impl Metric) {
        self.lock().register_with_unit(name, help, unit, metric);
    }

    /// The registry in the OpenMetrics text format, for the admin port's `/metrics` ([`CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.lock());
        out
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.inner
            .registry
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcLabels {
    method: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    method: String,
}

pub(crate) type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 1 ms to ~33 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// `trustmesh_rpc_requests_total{method, code}` and `trustmesh_rpc_duration_seconds{method}`.
#[derive(Clone, Debug)]
pub struct RpcMetrics {
    requests: Family<RpcLabels, Counter>,
    duration: HistogramFamily<MethodLabels>,
}

impl RpcMetrics {
    fn register(registry: &mut Registry) -> Self {
        let requests = Family::<RpcLabels, Counter>::default();
        let duration = HistogramFamily::<MethodLabels>::new_with_constructor(latency_histogram);
        registry.register(
            "rpc_requests",
            "Handled RPCs by method and status code",
            requests.clone(),
        );
        registry.register_with_unit(
            "rpc_duration",
            "RPC handling time by method",
            Unit::Seconds,
            duration.clone(),
        );
        Self { requests, duration }
    }

    /// Records one handled RPC: `method` as `/package.Service/Method` (or `Service/Method`), `code`
    /// as the gRPC status code name (`OK`, `NOT_FOUND`, ...).
    pub fn record(&self, method: &str, code: &str, elapsed: Duration) {
        let labels = RpcLabels {
            method: method.to_owned(),
            code: code.to_owned(),
        };
        self.requests.get_or_create(&labels).inc();
        self.duration
            .get_or_create(&MethodLabels {
                method: labels.method,
            })
            .observe(elapsed.as_secs_f64());
    }
}
