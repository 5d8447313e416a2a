//! A real S3-compatible server that keeps object versions (moto's `moto_server`) on a free loopback
//! port.
//!
//! `s3s-fs` ([`crate::s3`]) has no bucket versioning, so the tests of what happens on a versioned
//! bucket (every version and delete marker must go) run against moto, which implements
//! PutBucketVersioning, ListObjectVersions and DeleteObjects with version ids. Moto keeps everything
//! in memory: there is no directory to scan, only the S3 API. The binary comes from
//! `TRUSTMESH_MOTO_SERVER_BIN` (default `~/.trustmesh-dev/bin/moto_server`, installed from PyPI's
//! `moto[server]` by `infra/dev/up.sh`).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use crate::ports::free_port;
use crate::s3::{REGION, wait_accepting};

/// The environment variable naming the `moto_server` binary.
pub const MOTO_SERVER_BIN_ENV: &str = "TRUSTMESH_MOTO_SERVER_BIN";

/// The `moto_server` binary tests run: [`MOTO_SERVER_BIN_ENV`] or `~/.trustmesh-dev/bin/moto_server`.
#[must_use]
pub fn moto_server_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os(MOTO_SERVER_BIN_ENV) {
        return PathBuf::from(bin);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
    home.join(".trustmesh-dev/bin/moto_server")
}

/// A running `moto_server`, killed on drop.
#[derive(Debug)]
pub struct MotoServer {
    child: Child,
    port: u16,
    access_key: String,
    secret_key: String,
}

impl MotoServer {
    /// Starts `moto_server` on a free loopback port and waits until it accepts connections. Moto
    /// accepts any credentials; fresh random ones are handed out so clients sign as they would
    /// anywhere.
    ///
    /// # Panics
    ///
    /// If the binary is missing or the server does not come up: a test cannot go on without it.
    pub async fn start() -> Self {
        let bin = moto_server_bin();
        let mut last_error = String::new();
        // NOTE: the free port is found by binding port 0 and releasing it, so another process could
        // take it before moto binds; a few attempts make that race harmless.
        for _ in 0..5 {
            let port = free_port();
            let child = Command::new(&bin)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| {
                    panic!(
                        "cannot start moto_server at {} (set ${MOTO_SERVER_BIN_ENV}; infra/dev/up.sh installs it): {e}",
                        bin.display()
                    )
                });
            let mut server = Self {
                child,
                port,
                access_key: format!("tm{}", uuid::Uuid::new_v4().simple()),
                secret_key: hex::encode(rand::random::<[u8; 20]>()),
            };
            match wait_accepting(&mut server.child, port, "moto_server").await {
                Ok(()) => return server,
                Err(e) => last_error = e,
            }
        }
        panic!("moto_server did not start: {last_error}");
    }

    /// The server's endpoint URL, e.g. `http://127.0.0.1:41234`.
    #[must_use]
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The access key id clients should use.
    #[must_use]
    pub fn access_key(&self) -> &str {
        &self.access_key
    }

    /// The secret access key clients should use.
    #[must_use]
    pub fn secret_key(&self) -> &str {
        &self.secret_key
    }

    /// The region clients should use ([`REGION`]).
    #[must_use]
    pub fn region(&self) -> &str {
        REGION
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddr, TcpStream};
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn starts_and_stops() {
        let server = MotoServer::start().await;
        let port: u16 = server
            .endpoint()
            .rsplit(':')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        assert!(TcpStream::connect(addr).is_ok());
        drop(server);
        assert!(TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_err());
    }
}
