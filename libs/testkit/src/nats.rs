//! A real `nats-server` with JetStream on a free loopback port and a temporary store directory.
//!
//! The binary comes from `TRUSTMESH_NATS_SERVER_BIN` (default `~/.trustmesh-dev/bin/nats-server`,
//! installed by `infra/dev/up.sh`). The server is started with `-p -1` (the server picks a free port and
//! writes it to a ports file), so two tests never race for a port; [`NatsServer::restart`] reuses that
//! port and the same store directory, so streams, consumers and unacked messages survive it, as after a
//! crash of a real server.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The environment variable naming the `nats-server` binary.
pub const NATS_SERVER_BIN_ENV: &str = "TRUSTMESH_NATS_SERVER_BIN";

/// How long [`NatsServer::start`] and [`NatsServer::restart`] wait for JetStream to answer.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The `nats-server` binary tests run: [`NATS_SERVER_BIN_ENV`] or `~/.trustmesh-dev/bin/nats-server`.
#[must_use]
pub fn nats_server_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os(NATS_SERVER_BIN_ENV) {
        return PathBuf::from(bin);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
    home.join(".trustmesh-dev/bin/nats-server")
}

/// A running `nats-server` with JetStream, killed (and its store directory removed) on drop.
#[derive(Debug)]
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl NatsServer {
    /// Starts `nats-server -js` on a free loopback port with a fresh store directory and waits until
    /// JetStream answers.
    ///
    /// # Panics
    ///
    /// If the binary is missing or the server does not come up: a test cannot go on without it.
    pub async fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("trustmesh-nats-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temp dir for nats-server: {e}"));
        let child = spawn(dir.path(), None);
        let port = wait_for_port(dir.path(), child.id()).await;
        let mut server = Self {
            child: Some(child),
            port,
            dir,
        };
        server.wait_ready().await;
        server
    }

    /// The server's client URL, e.g. `nats://127.0.0.1:41234`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The port the server listens on (the same after [`NatsServer::restart`]).
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The JetStream store directory (kept across restarts).
    #[must_use]
    pub fn store_dir(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// Connects a new client to the server.
    ///
    /// The client reconnects on its own after [`NatsServer::restart`].
    ///
    /// # Panics
    ///
    /// If the server cannot be reached.
    pub async fn client(&self) -> async_nats::Client {
        async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(5))
            .connect(self.url())
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "cannot connect to the test nats-server at {}: {e}",
                    self.url()
                )
            })
    }

    /// Connects a new client and returns its JetStream context.
    ///
    /// # Panics
    ///
    /// If the server cannot be reached.
    pub async fn jetstream(&self) -> async_nats::jetstream::Context {
        async_nats::jetstream::new(self.client().await)
    }

    /// Kills the server (SIGKILL, like a crash) and waits for it to exit; [`NatsServer::restart`]
    /// brings it back. Does nothing if it is already stopped.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server if it runs and starts it again on the same port with the same store
    /// directory, then waits until JetStream answers.
    ///
    /// # Panics
    ///
    /// If the server does not come back.
    pub async fn restart(&mut self) {
        self.kill();
        let child = spawn(self.dir.path(), Some(self.port));
        self.child = Some(child);
        self.wait_ready().await;
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!(
                    "nats-server exited with {status}; see {}",
                    self.dir.path().join("nats.log").display()
                );
            }
            let last_error = match self.jetstream_answers().await {
                Ok(()) => return,
                Err(e) => e,
            };
            assert!(
                Instant::now() < deadline,
                "nats-server did not become ready within {READY_TIMEOUT:?}: {last_error}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    async fn jetstream_answers(&self) -> Result<(), String> {
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(2))
            .connect(self.url())
            .await
            .map_err(|e| e.to_string())?;
        let jetstream = async_nats::jetstream::new(client);
        jetstream
            .query_account()
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Spawns `nats-server` with JetStream on loopback; `port` `None` lets the server pick a free one.
fn spawn(dir: &Path, port: Option<u16>) -> Child {
    let bin = nats_server_bin();
    let port = port.map_or_else(|| "-1".to_owned(), |p| p.to_string());
    Command::new(&bin)
        .args(["-a", "127.0.0.1", "-p", &port, "-js"])
        .arg("-sd")
        .arg(dir.join("store"))
        .arg("--ports_file_dir")
        .arg(dir)
        .arg("-l")
        .arg(dir.join("nats.log"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start nats-server at {} (set ${NATS_SERVER_BIN_ENV}): {e}",
                bin.display()
            )
        })
}

/// Reads the client port from the ports file the server writes once it listens.
async fn wait_for_port(dir: &Path, pid: u32) -> u16 {
    let path = dir.join(format!("nats-server_{pid}.ports"));
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Ok(text) = std::fs::read_to_string(&path)
            && let Some(port) = client_port(&text)
        {
            return port;
        }
        assert!(
            Instant::now() < deadline,
            "nats-server wrote no ports file {} in time",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The port of the first `nats://` URL in a ports file (`{"nats":["nats://127.0.0.1:41234"],...}`).
fn client_port(ports_file: &str) -> Option<u16> {
    let start = ports_file.find("nats://")? + "nats://".len();
    let rest = &ports_file[start..];
    let end = rest.find('"')?;
    let host_port = &rest[..end];
    host_port.rsplit_once(':')?.1.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_ports_file() {
        let text = r#"{"nats":["nats://127.0.0.1:41234"],"monitoring":["http://127.0.0.1:8222"]}"#;
        assert_eq!(client_port(text), Some(41234));
        assert_eq!(client_port("{}"), None);
    }

    #[tokio::test]
    async fn starts_restarts_and_cleans_up() {
        let mut server = NatsServer::start().await;
        let jetstream = server.jetstream().await;
        jetstream
            .create_stream(async_nats::jetstream::stream::Config {
                name: "T".to_owned(),
                subjects: vec!["t.>".to_owned()],
                storage: async_nats::jetstream::stream::StorageType::File,
                ..Default::default()
            })
            .await
            .unwrap();
        jetstream
            .publish("t.a", "x".into())
            .await
            .unwrap()
            .await
            .unwrap();

        let port = server.port();
        server.restart().await;
        assert_eq!(server.port(), port, "a restart keeps the port");
        let jetstream = server.jetstream().await;
        let mut stream = jetstream.get_stream("T").await.unwrap();
        assert_eq!(
            stream.info().await.unwrap().state.messages,
            1,
            "a restart keeps the store"
        );

        let dir = server.dir.path().to_owned();
        drop(server);
        assert!(!dir.exists(), "the store directory should be removed");
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "the server should be gone"
        );
    }
}
