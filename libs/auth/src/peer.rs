//! Service-to-service identity (mTLS) and the one allow-list of who may call the mesh-internal
//! methods.
//!
//! Every gRPC listener verifies a client certificate, when one is presented, against the mesh CA
//! (`grpc.tls.client_ca_file`): a certificate from any other CA fails the TLS handshake. Tenants'
//! SDKs present none and authenticate with API keys. A service presents its own certificate (its
//! peer settings' `tls.cert_file`), whose DNS subject alternative name is its service name
//! (`ingest`, `trust-scoring`, ...).
//!
//! [`MESH_METHODS`] names each method one service calls on another on a tenant's behalf, and which
//! services may call it. Over TLS, the mesh's principal ([`Principal::Service`]) comes only from
//! there: a certificate of a listed service on a listed method. A mesh certificate of a service not
//! on the method's list is denied (PERMISSION_DENIED) whatever credential it sends, and so is the
//! shared `mesh.service_credential` without such a certificate. On the development transport
//! (plaintext on loopback, which the server warns about at start) there are no certificates and
//! the shared credential alone is the mesh's principal, as before mTLS.
//!
//! The interceptor ([`crate::Authenticator`]) applies this before resolving the bearer credential:
//! [`mesh_caller`] then [`check_bearer`]. Denials here happen before the request is decoded, so no
//! tenant is known to audit them under: they are logged (`auth.reason`, the peer's service and the
//! method) at warn level.

use tonic::Request;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use trustmesh_events::Service;
use trustmesh_runtime::grpc::GrpcMethodPath;
use x509_parser::extensions::GeneralName;

use crate::error::AuthError;
use crate::principal::Principal;

/// The mesh-internal methods and the services allowed to call each (full gRPC paths).
pub const MESH_METHODS: &[(&str, &[Service])] = &[
    // analysis reads the dataset it analyses; trust-scoring the one it scores and exports.
    (
        "/trustmesh.v1.DatasetService/GetDataset",
        &[Service::Analysis, Service::TrustScoring],
    ),
    (
        "/trustmesh.v1.DatasetService/ReadRows",
        &[Service::Analysis, Service::TrustScoring],
    ),
    // trust-scoring reads the model outputs of the job it scores.
    (
        "/trustmesh.v1.AnalysisService/GetModelOutputs",
        &[Service::TrustScoring],
    ),
    // tenancy forwards tenants' webhook management to notifier.
    (
        "/trustmesh.v1.WebhookService/CreateWebhookEndpoint",
        &[Service::Tenancy],
    ),
    (
        "/trustmesh.v1.WebhookService/GetWebhookEndpoint",
        &[Service::Tenancy],
    ),
    (
        "/trustmesh.v1.WebhookService/ListWebhookEndpoints",
        &[Service::Tenancy],
    ),
    (
        "/trustmesh.v1.WebhookService/UpdateWebhookEndpoint",
        &[Service::Tenancy],
    ),
    (
        "/trustmesh.v1.WebhookService/DeleteWebhookEndpoint",
        &[Service::Tenancy],
    ),
    (
        "/trustmesh.v1.WebhookService/RotateWebhookSecret",
        &[Service::Tenancy],
    ),
    (
        "/trustmesh.v1.WebhookService/ListWebhookDeliveries",
        &[Service::Tenancy],
    ),
];

/// The services allowed to call `method` (a full gRPC path), or `None` if it is not mesh-internal.
#[must_use]
pub fn allowed_callers(method: &str) -> Option<&'static [Service]> {
    MESH_METHODS
        .iter()
        .find(|(path, _)| *path == method)
        .map(|(_, services)| *services)
}

/// The mesh service a client certificate (DER) names: its DNS subject alternative names name exactly
/// one service (`localhost` and other names aside). `None` if they name none or several (a shared
/// infrastructure certificate listing every host must not pass for one service), or if it does not
/// parse.
#[must_use]
pub fn certificate_service(der: &[u8]) -> Option<Service> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let names = cert.subject_alternative_name().ok()??;
    let mut services = names.value.general_names.iter().filter_map(|name| {
        if let GeneralName::DNSName(dns) = name {
            Service::from_name(dns)
        } else {
            None
        }
    });
    let service = services.next()?;
    services.all(|other| other == service).then_some(service)
}

/// How the caller of `request` reached the server.
enum Transport {
    /// Not through a trustmesh gRPC listener (no method path): no mesh checks apply.
    Unknown,
    /// Plaintext (development, loopback only).
    Plaintext,
    /// TLS 1.3, with the service named by the client certificate (verified against the mesh CA at
    /// the handshake) if one was presented: `Some(None)` for a certificate naming no service.
    Tls(Option<Option<Service>>),
}

fn transport<T>(request: &Request<T>) -> (Transport, Option<&str>) {
    let method = request
        .extensions()
        .get::<GrpcMethodPath>()
        .map(|path| path.0.as_str());
    let extensions = request.extensions();
    let transport = if method.is_none() {
        Transport::Unknown
    } else if let Some(tls) = extensions.get::<TlsConnectInfo<TcpConnectInfo>>() {
        Transport::Tls(
            tls.peer_certs()
                .and_then(|certs| certs.first().map(|leaf| certificate_service(leaf.as_ref()))),
        )
    } else {
        Transport::Plaintext
    };
    (transport, method)
}

fn denied(method: &str, peer: &str, why: &str) -> AuthError {
    tracing::warn!(
        auth.reason = "SERVICE_DENIED",
        peer.service = peer,
        rpc.method = method,
        "A mesh call was refused: {why}."
    );
    AuthError::ServiceDenied {
        resource: method.to_owned(),
    }
}

/// The mesh's principal if `request` comes from a service allowed on a mesh-internal method (by its
/// client certificate), `None` if the request is to be authenticated by its bearer credential.
///
/// # Errors
/// [`AuthError::ServiceDenied`] for a client certificate of a service not on the method's list (or
/// naming no service) on a mesh-internal method.
pub fn mesh_caller<T>(request: &Request<T>) -> Result<Option<Principal>, AuthError> {
    let (Transport::Tls(Some(peer)), Some(method)) = transport(request) else {
        return Ok(None);
    };
    let Some(allowed) = allowed_callers(method) else {
        // A certificate holder on any other method is a client like others (its bearer decides).
        return Ok(None);
    };
    match peer {
        Some(service) if allowed.contains(&service) => Ok(Some(Principal::Service)),
        Some(service) => Err(denied(
            method,
            service.as_str(),
            "the service is not on the method's allow-list",
        )),
        None => Err(denied(
            method,
            "unknown",
            "the client certificate names no service",
        )),
    }
}

/// Checks `principal`, resolved from the bearer credential of `request`, against its transport: over
/// TLS, the shared service credential is not the mesh's principal (a certificate is).
///
/// # Errors
/// [`AuthError::ServiceDenied`] for the service credential over TLS.
pub fn check_bearer<T>(request: &Request<T>, principal: Principal) -> Result<Principal, AuthError> {
    match (transport(request), &principal) {
        ((Transport::Tls(peer), Some(method)), Principal::Service) => {
            let peer = peer.flatten().map_or("none", Service::as_str);
            Err(denied(
                method,
                peer,
                "over TLS the service credential needs a mesh client certificate on an allowed method",
            ))
        }
        _ => Ok(principal),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mesh_method_names_at_least_one_caller_and_appears_once() {
        let mut paths: Vec<&str> = MESH_METHODS.iter().map(|(path, _)| *path).collect();
        for (path, services) in MESH_METHODS {
            assert!(!services.is_empty(), "{path}");
            assert!(path.starts_with("/trustmesh.v1.") && path.matches('/').count() == 2);
        }
        paths.sort_unstable();
        paths.dedup();
        assert_eq!(paths.len(), MESH_METHODS.len());
        assert_eq!(
            allowed_callers("/trustmesh.v1.DatasetService/ReadRows"),
            Some(&[Service::Analysis, Service::TrustScoring][..])
        );
        assert_eq!(
            allowed_callers("/trustmesh.v1.DatasetService/UploadDataset"),
            None
        );
    }

    fn certificate(names: &[&str]) -> Vec<u8> {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(names)
            .unwrap()
            .self_signed(&key)
            .unwrap();
        cert.der().to_vec()
    }

    #[test]
    fn a_certificate_is_the_one_service_its_dns_names_name() {
        let ingest = certificate(&["ingest", "ingest.trustmesh.svc", "localhost", "127.0.0.1"]);
        assert_eq!(certificate_service(&ingest), Some(Service::Ingest));
        let scoring = certificate(&["trust-scoring"]);
        assert_eq!(certificate_service(&scoring), Some(Service::TrustScoring));
        // None, several (a shared infrastructure certificate), or not a certificate: no service.
        for names in [&["nats", "localhost"][..], &["ingest", "analysis"][..]] {
            assert_eq!(certificate_service(&certificate(names)), None, "{names:?}");
        }
        assert_eq!(certificate_service(b"not a certificate"), None);
    }
}
