//! Prints the nats-server `authorization` block (`infra/nats/permissions.conf`) with one more user per
//! tenant named on the command line, for that tenant's dedicated analysis deployment
//! (infra/README.md, "Deployment profiles"):
//!
//! ```text
//! cargo run -p trustmesh-events --example nats-permissions -- vip > infra/nats/permissions.conf
//! ```

use std::process::ExitCode;

use trustmesh_events::TenantId;
use trustmesh_events::permissions::nats_authorization_config_with_dedicated;

fn main() -> ExitCode {
    let mut tenants = Vec::new();
    for arg in std::env::args().skip(1) {
        match TenantId::parse(&arg) {
            Ok(tenant) => tenants.push(tenant),
            Err(error) => {
                eprintln!("`{arg}` is not a tenant id: {error}");
                return ExitCode::from(64);
            }
        }
    }
    print!("{}", nats_authorization_config_with_dedicated(&tenants));
    ExitCode::SUCCESS
}
