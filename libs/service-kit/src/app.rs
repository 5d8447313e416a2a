//! [`Application`]: a service binary's built service, its component hosted on its own gRPC and
//! admin listeners until shutdown, for any service whose settings are [`ServiceSettings`].

use std::marker::PhantomData;

use tokio_util::sync::CancellationToken;
use trustmesh_runtime::{
    AdminSettings, GrpcSettings, Host, HostError, ServerError, ShutdownSettings,
};
pub use trustmesh_runtime::{Component, Readiness};

/// A service's listener settings: gRPC, admin, shutdown.
pub type Listeners = (GrpcSettings, AdminSettings, ShutdownSettings);

/// A service's settings, as far as its [`Application`] needs them: its listeners and its
/// component.
pub trait ServiceSettings: Sized {
    /// Why the service could not start or stopped (the service's `AppError`).
    type Error: From<ServerError> + From<HostError>;

    /// The service's `grpc`, `admin` and `shutdown` sections, which its [`Host`] is bound with.
    fn into_listeners(self) -> Listeners;

    /// The service's component (its gRPC services and background tasks), its dependencies
    /// registered on `readiness`.
    ///
    /// Not bound by `Send`: a service is built where it is awaited (its `main`, its tests), never
    /// spawned, and the compiler cannot prove the services' `component` futures `Send` for every
    /// lifetime of `self` and `readiness` (`implementation of Send is not general enough`).
    fn component(
        &self,
        readiness: &Readiness,
    ) -> impl Future<Output = Result<Component, Self::Error>>;
}

/// The built service, ready to run: the component of its settings `S` on its own gRPC and admin
/// listeners (addresses through [`Host`]).
#[derive(Debug)]
pub struct Application<S> {
    host: Host,
    settings: PhantomData<fn() -> S>,
}

impl<S: ServiceSettings> Application<S> {
    /// Builds the service's component ([`ServiceSettings::component`]) and binds the gRPC and
    /// admin listeners.
    ///
    /// # Errors
    ///
    /// `S::Error` naming what could not be set up.
    pub async fn build(settings: S) -> Result<Self, S::Error> {
        let readiness = Readiness::new();
        let component = settings.component(&readiness).await?;
        let (grpc, admin, shutdown) = settings.into_listeners();
        Ok(Self {
            host: Host::service(component, grpc, &admin, &shutdown, readiness).await?,
            settings: PhantomData,
        })
    }

    /// Serves until `shutdown` is cancelled, with the background tasks beside the servers.
    ///
    /// # Errors
    ///
    /// `S::Error` from [`HostError`] when a server or a background task failed.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<(), S::Error> {
        Ok(self.host.run_until_stopped(shutdown).await?)
    }
}

impl<S> std::ops::Deref for Application<S> {
    type Target = Host;

    fn deref(&self) -> &Host {
        &self.host
    }
}

/// Declares a service's `pub type Application` and implements [`ServiceSettings`] for its settings
/// type, whose `grpc`, `admin` and `shutdown` fields are its listeners and whose component the
/// service's `component(&settings, &readiness)` function builds:
/// `trustmesh_service_kit::application!(Settings, AppError, component);`.
#[macro_export]
macro_rules! application {
    ($settings:ty, $error:ty, $component:ident) => {
        /// The built service, ready to run: its [`component`] on its own gRPC and admin listeners
        /// (addresses through `trustmesh_runtime::Host`).
        pub type Application = $crate::Application<$settings>;

        impl $crate::ServiceSettings for $settings {
            type Error = $error;

            fn into_listeners(self) -> $crate::app::Listeners {
                (self.grpc, self.admin, self.shutdown)
            }

            fn component(
                &self,
                readiness: &$crate::app::Readiness,
            ) -> impl ::std::future::Future<
                Output = ::std::result::Result<$crate::app::Component, $error>,
            > {
                $component(self, readiness)
            }
        }
    };
}
