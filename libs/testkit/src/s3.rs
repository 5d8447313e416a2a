//! A real S3-compatible server (`s3s-fs`) on a free loopback port with a temporary root directory.
//!
//! The binary comes from `TRUSTMESH_S3S_FS_BIN` (default `~/.trustmesh-dev/bin/s3s-fs`, installed by
//! `infra/dev/up.sh`). `s3s-fs` keeps each bucket as a directory and each object as a file under its
//! root, so a test can scan [`S3Server::root_dir`] for plaintext.

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The environment variable naming the `s3s-fs` binary.
pub const S3S_FS_BIN_ENV: &str = "TRUSTMESH_S3S_FS_BIN";

/// The region the test server's clients should use.
pub const REGION: &str = "us-east-1";

/// The `s3s-fs` binary tests run: [`S3S_FS_BIN_ENV`] or `~/.trustmesh-dev/bin/s3s-fs`.
#[must_use]
pub fn s3s_fs_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os(S3S_FS_BIN_ENV) {
        return PathBuf::from(bin);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
    home.join(".trustmesh-dev/bin/s3s-fs")
}

/// A running `s3s-fs`, killed (and its root directory removed) on drop.
#[derive(Debug)]
pub struct S3Server {
    child: Child,
    port: u16,
    access_key: String,
    secret_key: String,
    root: tempfile::TempDir,
}

impl S3Server {
    /// Starts `s3s-fs` on a free loopback port with fresh random credentials and waits until it accepts
    /// connections.
    ///
    /// # Panics
    ///
    /// If the binary is missing or the server does not come up: a test cannot go on without it.
    pub async fn start() -> Self {
        let bin = s3s_fs_bin();
        let access_key = format!("tm{}", uuid::Uuid::new_v4().simple());
        let secret_key = hex::encode(rand::random::<[u8; 20]>());
        let mut last_error = String::new();
        // NOTE: the free port is found by binding port 0 and releasing it, so another process could take
        // it before s3s-fs binds; a few attempts make that race harmless.
        for _ in 0..5 {
            let root = tempfile::Builder::new()
                .prefix("trustmesh-s3s-")
                .tempdir()
                .unwrap_or_else(|e| panic!("cannot create a temp dir for s3s-fs: {e}"));
            let port = crate::ports::free_port();
            let child = spawn(&bin, port, &access_key, &secret_key, root.path());
            let mut server = Self {
                child,
                port,
                access_key: access_key.clone(),
                secret_key: secret_key.clone(),
                root,
            };
            match server.wait_ready().await {
                Ok(()) => return server,
                Err(e) => last_error = e,
            }
        }
        panic!("s3s-fs did not start: {last_error}");
    }

    async fn wait_ready(&mut self) -> Result<(), String> {
        wait_accepting(&mut self.child, self.port, "s3s-fs").await
    }

    /// Kills the server (SIGKILL, like a crash or an outage) and waits for it to exit; its objects stay
    /// for [`S3Server::restart`]. Does nothing if it is already stopped.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Kills the server if it runs and starts it again on the same port, credentials and root
    /// directory (every object kept), then waits until it accepts connections.
    ///
    /// # Panics
    ///
    /// If it does not come back.
    pub async fn restart(&mut self) {
        self.stop();
        let bin = s3s_fs_bin();
        let mut last_error = String::new();
        // NOTE: the port was just released; a few attempts ride out a rebind refused meanwhile.
        for _ in 0..5 {
            self.child = spawn(
                &bin,
                self.port,
                &self.access_key,
                &self.secret_key,
                self.root.path(),
            );
            match self.wait_ready().await {
                Ok(()) => return,
                Err(e) => last_error = e,
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("s3s-fs did not restart on port {}: {last_error}", self.port);
    }

    /// The server's endpoint URL, e.g. `http://127.0.0.1:41234`.
    #[must_use]
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The port the server listens on.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The access key id clients must use.
    #[must_use]
    pub fn access_key(&self) -> &str {
        &self.access_key
    }

    /// The secret access key clients must use.
    #[must_use]
    pub fn secret_key(&self) -> &str {
        &self.secret_key
    }

    /// The region clients should use ([`REGION`]).
    #[must_use]
    pub fn region(&self) -> &str {
        REGION
    }

    /// The directory holding every bucket and object the server stores.
    #[must_use]
    pub fn root_dir(&self) -> &Path {
        self.root.path()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Spawns `s3s-fs` on loopback `port`, serving `root` to the given credentials.
fn spawn(bin: &Path, port: u16, access_key: &str, secret_key: &str, root: &Path) -> Child {
    Command::new(bin)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--access-key", access_key, "--secret-key", secret_key])
        .arg(root)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start s3s-fs at {} (set ${S3S_FS_BIN_ENV}): {e}",
                bin.display()
            )
        })
}

/// Waits until `child`, a server starting on loopback `port`, accepts connections (20 s at most).
pub(crate) async fn wait_accepting(child: &mut Child, port: u16, what: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("{what} exited with {status}"));
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("{what} did not accept connections within 20 s"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn starts_and_stops() {
        let server = S3Server::start().await;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, server.port()));
        assert!(TcpStream::connect(addr).is_ok());
        assert!(server.endpoint().starts_with("http://127.0.0.1:"));
        let root = server.root_dir().to_owned();
        assert!(root.is_dir());
        drop(server);
        assert!(!root.exists(), "the root directory should be removed");
        assert!(TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_err());
    }

    #[tokio::test]
    async fn restarts_on_the_same_port_keeping_its_objects() {
        let mut server = S3Server::start().await;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, server.port()));
        let kept = server.root_dir().join("bucket");
        std::fs::create_dir(&kept).unwrap();
        server.stop();
        assert!(TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_err());
        server.restart().await;
        assert!(TcpStream::connect(addr).is_ok());
        assert!(kept.is_dir());
    }
}
