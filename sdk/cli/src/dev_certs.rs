//! `trustmesh dev-certs --out DIR`: a local mesh CA and one certificate per service (its name as
//! common name and DNS subject alternative name, valid for server and client authentication), plus
//! `nats` and any `--name`, for development and the docker layout. Idempotent: what exists is kept.
//! The same implementation as the tests' (`trustmesh_testkit::tls::MeshPki`).

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use trustmesh_testkit::tls::{MESH_SERVICES, MeshPki};

/// `trustmesh dev-certs`.
#[derive(Debug, Args)]
pub(crate) struct DevCertsArgs {
    /// Directory for ca.pem, ca.key and NAME.pem, NAME.key per name (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// Another name to issue a certificate for (repeatable), e.g. `postgres`.
    #[arg(long = "name")]
    names: Vec<String>,
}

/// Issues what is missing in `--out` and lists the files.
pub(crate) fn run(args: &DevCertsArgs) -> anyhow::Result<()> {
    let mut names: Vec<&str> = MESH_SERVICES.to_vec();
    names.push("nats");
    names.extend(args.names.iter().map(String::as_str));
    let pki = MeshPki::ensure(&args.out, &names)
        .with_context(|| format!("issuing certificates in {}", args.out.display()))?;
    println!("CA: {}", pki.ca().display());
    for name in names {
        println!(
            "{name}: {} {}",
            pki.cert(name).display(),
            pki.key(name).display()
        );
    }
    Ok(())
}
