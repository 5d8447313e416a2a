//! [`Component`]: a service as the parts a process hosts — its gRPC services and its background
//! tasks (outbox relay, consumers, sweepers) — and [`Host`], which serves any number of components
//! on one gRPC port and one admin port. A service's own binary hosts its one component;
//! `trustmesh standalone` hosts all seven in one process.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use crate::admin::{AdminServer, AdminSettings};
use crate::error::ServerError;
use crate::grpc::{GrpcServer, GrpcServerBuilder, GrpcSettings};
use crate::observe::code_name;
use crate::readiness::{Dependency, Readiness};
use crate::shutdown::ShutdownSettings;
use trustmesh_telemetry::Metrics;

/// Why a background task stopped.
pub type TaskError = Box<dyn std::error::Error + Send + Sync + 'static>;

type TaskFuture = Pin<Box<dyn Future<Output = Result<(), TaskError>> + Send>>;
type Register = Box<dyn FnOnce(GrpcServerBuilder) -> GrpcServerBuilder + Send>;

struct Task {
    name: &'static str,
    ready: Option<Dependency>,
    start: Box<dyn FnOnce(CancellationToken) -> TaskFuture + Send>,
}

/// A service's gRPC services and background tasks, built but not yet running.
pub struct Component {
    name: &'static str,
    register: Vec<Register>,
    tasks: Vec<Task>,
    on_exit: Vec<CancellationToken>,
}

impl std::fmt::Debug for Component {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Component")
            .field("name", &self.name)
            .field("services", &self.register.len())
            .field(
                "tasks",
                &self.tasks.iter().map(|t| t.name).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Component {
    /// An empty component of service `name`.
    #[must_use]
    pub fn new(name: &'static str) -> Self {
        Self {
            name,
            register: Vec::new(),
            tasks: Vec::new(),
            on_exit: Vec::new(),
        }
    }

    /// The service's name.
    #[must_use]
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Adds a gRPC service: `add` puts it on the host's [`GrpcServerBuilder`] (typically
    /// `move |builder| builder.add_service(server)`).
    #[must_use]
    pub fn service(
        mut self,
        add: impl FnOnce(GrpcServerBuilder) -> GrpcServerBuilder + Send + 'static,
    ) -> Self {
        self.register.push(Box::new(add));
        self
    }

    /// Adds background task `name`, started with the host's shutdown token. If it fails, `ready`
    /// (when given) turns not ready, the error is logged, and [`Host::run_until_stopped`] returns
    /// it once serving ends; the servers keep serving meanwhile.
    #[must_use]
    pub fn task<F, Fut, E>(
        mut self,
        name: &'static str,
        ready: Option<Dependency>,
        start: F,
    ) -> Self
    where
        F: FnOnce(CancellationToken) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<TaskError>,
    {
        self.tasks.push(Task {
            name,
            ready,
            start: Box::new(move |shutdown| {
                let run = start(shutdown);
                Box::pin(async move { run.await.map_err(Into::into) })
            }),
        });
        self
    }

    /// Adds background task `name` that cannot fail (e.g. an outbox relay, which retries forever).
    #[must_use]
    pub fn infallible_task<F, Fut>(self, name: &'static str, start: F) -> Self
    where
        F: FnOnce(CancellationToken) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.task(name, None, move |shutdown| {
            let run = start(shutdown);
            async move {
                run.await;
                Ok::<(), TaskError>(())
            }
        })
    }

    /// Cancels `token` once the host has stopped (e.g. the API-key cache's watch).
    #[must_use]
    pub fn cancel_on_exit(mut self, token: CancellationToken) -> Self {
        self.on_exit.push(token);
        self
    }
}

/// Why a [`Host`] stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The gRPC or admin server failed.
    #[error("server failed")]
    Server(#[from] ServerError),
    /// A background task of a component stopped on an error.
    #[error("{component}: {task} stopped")]
    Task {
        /// The component's service name.
        component: &'static str,
        /// The task's name.
        task: &'static str,
        /// Its error.
        #[source]
        source: TaskError,
    },
}

/// One gRPC server and one admin server serving components, with their background tasks.
pub struct Host {
    grpc: GrpcServer,
    admin: AdminServer,
    components: Vec<Component>,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host")
            .field("grpc", &self.grpc.local_addr())
            .field("admin", &self.admin.local_addr())
            .field("components", &self.components)
            .finish()
    }
}

impl Host {
    /// Registers every component's services on `grpc` (whose health follows `readiness`), binds it,
    /// and binds the admin server (rendering `/metrics` with `metrics`).
    ///
    /// # Errors
    ///
    /// [`ServerError`] if a listener cannot be bound or TLS material cannot be loaded.
    pub async fn build(
        grpc: GrpcServerBuilder,
        admin: &AdminSettings,
        readiness: Readiness,
        metrics: impl Fn() -> String + Send + Sync + 'static,
        components: impl IntoIterator<Item = Component>,
    ) -> Result<Self, ServerError> {
        let mut components: Vec<Component> = components.into_iter().collect();
        let grpc = components
            .iter_mut()
            .flat_map(|component| component.register.drain(..))
            .fold(grpc, |builder, add| add(builder))
            .build()
            .await?;
        let admin = AdminServer::bind(admin, readiness, metrics).await?;
        Ok(Self {
            grpc,
            admin,
            components,
        })
    }

    /// A service binary's host: `component` alone on the `grpc` and `admin` listeners, its RPCs
    /// recorded in metrics named for it and drained within the `shutdown` grace period.
    ///
    /// # Errors
    ///
    /// As [`Host::build`].
    pub async fn service(
        component: Component,
        grpc: GrpcSettings,
        admin: &AdminSettings,
        shutdown: &ShutdownSettings,
        readiness: Readiness,
    ) -> Result<Self, ServerError> {
        let metrics = Metrics::new(component.name());
        let grpc = instrumented(GrpcServer::builder(grpc, readiness.clone()), &metrics)
            .grace_period(shutdown.grace_period());
        Self::build(
            grpc,
            admin,
            readiness,
            move || metrics.render(),
            [component],
        )
        .await
    }

    /// The address the gRPC server listens on (the real port when bound to port 0).
    #[must_use]
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc.local_addr()
    }

    /// The address the admin server listens on.
    #[must_use]
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin.local_addr()
    }

    /// Starts every background task, serves until `shutdown` is cancelled (or a server fails),
    /// then stops the tasks and waits for them. Dropping the returned future (a crash) aborts the
    /// tasks, whose unacknowledged deliveries NATS redelivers.
    ///
    /// # Errors
    ///
    /// [`HostError::Server`] first, else the first [`HostError::Task`].
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<(), HostError> {
        let mut running = Vec::new();
        let mut on_exit = Vec::new();
        for component in self.components {
            let component_name = component.name;
            on_exit.extend(component.on_exit);
            for task in component.tasks {
                let run = (task.start)(shutdown.clone());
                let (name, ready) = (task.name, task.ready);
                let handle = AbortOnDropHandle::new(tokio::spawn(async move {
                    let result = run.await;
                    if let Err(error) = &result {
                        if let Some(ready) = ready {
                            ready.set_not_ready();
                        }
                        tracing::error!(
                            component = component_name,
                            task = name,
                            error = %error,
                            "A background task stopped; the service is not ready."
                        );
                    }
                    result
                }));
                running.push((component_name, name, handle));
            }
        }
        let served = crate::serve(self.grpc, self.admin, shutdown.clone()).await;
        shutdown.cancel();
        for token in on_exit {
            token.cancel();
        }
        let mut first_error = None;
        for (component, task, handle) in running {
            match handle.await {
                Ok(Ok(())) => {}
                Ok(Err(source)) => {
                    first_error.get_or_insert(HostError::Task {
                        component,
                        task,
                        source,
                    });
                }
                Err(error) => {
                    tracing::warn!(component, task, error = %error, "A background task ended abnormally.");
                }
            }
        }
        served?;
        first_error.map_or(Ok(()), Err)
    }
}

/// `builder` with reflection of every trustmesh API, each RPC recorded in `metrics`, and each RPC
/// span continuing the caller's trace (W3C `traceparent` in the request metadata).
pub fn instrumented(builder: GrpcServerBuilder, metrics: &Metrics) -> GrpcServerBuilder {
    let metrics = metrics.clone();
    builder
        .file_descriptor_set(trustmesh_proto::FILE_DESCRIPTOR_SET)
        .on_rpc(move |method, code, elapsed| {
            metrics.rpc().record(method, code_name(code), elapsed);
        })
        .span_parent(trustmesh_telemetry::continue_trace)
}
