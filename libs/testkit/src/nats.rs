//! A real `nats-server` with JetStream on a free loopback port and a temporary store directory.
//!
//! The binary comes from `TRUSTMESH_NATS_SERVER_BIN` (default `~/.trustmesh-dev/bin/nats-server`,
//! installed by `infra/dev/up.sh`). The server is started with `-p -1` (the server picks a free port and
//! writes it to a ports file), so two tests never race for a port; [`NatsServer::restart`] reuses that
//! port and the same store directory, so streams, consumers and unacked messages survive it, as after a
//! crash of a real server.
//!
//! [`NatsCluster`] is three such servers joined by routes into one JetStream cluster on loopback
//! (`sync_interval: always`, so an acknowledged message is on disk on a quorum of nodes), for tests
//! of replicated (R3) streams and of losing a node.

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
        let url = self.url();
        let log = self.dir.path().join("nats.log");
        wait_jetstream(self.child.as_mut(), &url, &log).await;
    }
}

/// Waits until JetStream answers at `url` (a cluster answers once it has a meta leader).
///
/// # Panics
///
/// If `child` exits meanwhile (its log is `log`), or after [`READY_TIMEOUT`].
async fn wait_jetstream(mut child: Option<&mut Child>, url: &str, log: &Path) {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Some(child) = child.as_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            panic!("nats-server exited with {status}; see {}", log.display());
        }
        let last_error = match jetstream_answers(url).await {
            Ok(()) => return,
            Err(e) => e,
        };
        assert!(
            Instant::now() < deadline,
            "nats-server at {url} did not become ready within {READY_TIMEOUT:?}: {last_error}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn jetstream_answers(url: &str) -> Result<(), String> {
    let client = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(2))
        .connect(url)
        .await
        .map_err(|e| e.to_string())?;
    let jetstream = async_nats::jetstream::new(client);
    jetstream
        .query_account()
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The nodes of a [`NatsCluster`].
pub const CLUSTER_SIZE: usize = 3;

/// One node of a [`NatsCluster`]: its process (if running), ports and config file.
#[derive(Debug)]
struct ClusterNode {
    child: Option<Child>,
    port: u16,
    config: PathBuf,
    log: PathBuf,
}

/// A 3-node `nats-server` JetStream cluster on loopback, each node with its own store directory;
/// every node is killed (and the directories removed) on drop.
///
/// Nodes are named `n0`, `n1`, `n2` (the `server_name` JetStream reports as stream leader and
/// replicas). A client connected to one node learns the others' URLs from it and fails over to them.
#[derive(Debug)]
pub struct NatsCluster {
    nodes: Vec<ClusterNode>,
    dir: tempfile::TempDir,
}

impl NatsCluster {
    /// Starts the three nodes (ports picked free), waits until the cluster has formed: JetStream
    /// answers on every node and a stream with three replicas can be created.
    ///
    /// # Panics
    ///
    /// If the binary is missing or the cluster does not form: a test cannot go on without it.
    pub async fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("trustmesh-nats-cluster-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temp dir for the nats cluster: {e}"));
        let ports = crate::ports::free_ports(2 * CLUSTER_SIZE);
        let (client_ports, route_ports) = ports.split_at(CLUSTER_SIZE);
        let routes = route_ports
            .iter()
            .map(|p| format!("\"nats-route://127.0.0.1:{p}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let nodes = (0..CLUSTER_SIZE)
            .map(|i| {
                let node_dir = dir.path().join(node_name(i));
                std::fs::create_dir_all(&node_dir)
                    .unwrap_or_else(|e| panic!("cannot create {}: {e}", node_dir.display()));
                let config = node_dir.join("nats.conf");
                // NOTE: `sync_interval: always` fsyncs every write before the ack, as in production
                // (infra/k8s), so "acknowledged" means "on disk on a quorum".
                let text = format!(
                    "server_name: {name}\n\
                     listen: \"127.0.0.1:{port}\"\n\
                     jetstream {{\n  store_dir: \"{store}\"\n  sync_interval: always\n}}\n\
                     cluster {{\n  name: trustmesh-test\n  listen: \"127.0.0.1:{route}\"\n  \
                     routes: [{routes}]\n}}\n",
                    name = node_name(i),
                    port = client_ports[i],
                    store = node_dir.join("store").display(),
                    route = route_ports[i],
                );
                std::fs::write(&config, text)
                    .unwrap_or_else(|e| panic!("cannot write {}: {e}", config.display()));
                ClusterNode {
                    child: None,
                    port: client_ports[i],
                    config,
                    log: node_dir.join("nats.log"),
                }
            })
            .collect();
        let mut cluster = Self { nodes, dir };
        for node in &mut cluster.nodes {
            node.child = Some(spawn_node(node));
        }
        for i in 0..CLUSTER_SIZE {
            cluster.wait_node_ready(i).await;
        }
        cluster.wait_replicated_streams().await;
        cluster
    }

    /// The client URL of node `node`, e.g. `nats://127.0.0.1:41234`.
    ///
    /// # Panics
    ///
    /// If there is no such node.
    #[must_use]
    pub fn url(&self, node: usize) -> String {
        format!("nats://127.0.0.1:{}", self.nodes[node].port)
    }

    /// The `server_name` of node `node` (`n0`, `n1`, `n2`).
    #[must_use]
    pub fn name(&self, node: usize) -> String {
        node_name(node)
    }

    /// The index of the node named `name`, if it is one of this cluster's.
    #[must_use]
    pub fn node_named(&self, name: &str) -> Option<usize> {
        (0..self.nodes.len()).find(|&i| node_name(i) == name)
    }

    /// Whether node `node` runs.
    #[must_use]
    pub fn is_running(&self, node: usize) -> bool {
        self.nodes[node].child.is_some()
    }

    /// The directory holding every node's config, log and store.
    #[must_use]
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Connects a new client to the first running node; it fails over to the others on its own.
    ///
    /// # Panics
    ///
    /// If no node runs or it cannot be reached.
    pub async fn client(&self) -> async_nats::Client {
        let node = (0..self.nodes.len())
            .find(|&i| self.is_running(i))
            .unwrap_or_else(|| panic!("no node of the nats cluster runs"));
        async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(5))
            .connect(self.url(node))
            .await
            .unwrap_or_else(|e| panic!("cannot connect to nats node {node}: {e}"))
    }

    /// Connects a new client and returns its JetStream context.
    ///
    /// # Panics
    ///
    /// As [`NatsCluster::client`].
    pub async fn jetstream(&self) -> async_nats::jetstream::Context {
        async_nats::jetstream::new(self.client().await)
    }

    /// Kills node `node` (SIGKILL, like a crash) and waits for it to exit; its store stays for
    /// [`NatsCluster::restart`]. Does nothing if it is already stopped.
    pub fn kill(&mut self, node: usize) {
        if let Some(mut child) = self.nodes[node].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills node `node` if it runs and starts it again with the same ports and store, then waits
    /// until JetStream answers on it.
    ///
    /// # Panics
    ///
    /// If the node does not come back.
    pub async fn restart(&mut self, node: usize) {
        self.kill(node);
        self.nodes[node].child = Some(spawn_node(&self.nodes[node]));
        self.wait_node_ready(node).await;
    }

    async fn wait_node_ready(&mut self, node: usize) {
        let url = self.url(node);
        let node = &mut self.nodes[node];
        wait_jetstream(node.child.as_mut(), &url, &node.log).await;
    }

    /// Waits until an R3 stream can be created: every node has joined the JetStream meta group.
    async fn wait_replicated_streams(&self) {
        let jetstream = self.jetstream().await;
        let deadline = Instant::now() + READY_TIMEOUT;
        let config = async_nats::jetstream::stream::Config {
            name: "TESTKIT_CLUSTER_PROBE".to_owned(),
            subjects: vec!["testkit.cluster.probe".to_owned()],
            num_replicas: CLUSTER_SIZE,
            ..Default::default()
        };
        loop {
            let last_error = match jetstream.create_stream(config.clone()).await {
                Ok(_) => {
                    let _ = jetstream.delete_stream(&config.name).await;
                    return;
                }
                Err(e) => e.to_string(),
            };
            assert!(
                Instant::now() < deadline,
                "the nats cluster did not accept an R{CLUSTER_SIZE} stream within \
                 {READY_TIMEOUT:?}: {last_error}; logs in {}",
                self.dir.path().display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for node in 0..self.nodes.len() {
            self.kill(node);
        }
    }
}

/// `n0`, `n1`, ...
fn node_name(node: usize) -> String {
    format!("n{node}")
}

/// Spawns a cluster node from its config file, logging to its log file.
fn spawn_node(node: &ClusterNode) -> Child {
    let bin = nats_server_bin();
    Command::new(&bin)
        .arg("-c")
        .arg(&node.config)
        .arg("-l")
        .arg(&node.log)
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

/// The port of the first `nats://` (or `tls://`) URL in a ports file (`{"nats":["nats://127.0.0.1:41234"],...}`).
pub(crate) fn client_port(ports_file: &str) -> Option<u16> {
    // `tls://` when the server requires TLS.
    let start = ["nats://", "tls://"]
        .iter()
        .find_map(|scheme| ports_file.find(scheme).map(|at| at + scheme.len()))?;
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
        let tls = r#"{"nats":["tls://127.0.0.1:41235"],"monitoring":["http://127.0.0.1:8222"]}"#;
        assert_eq!(client_port(tls), Some(41235));
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

    #[tokio::test]
    async fn a_cluster_keeps_acknowledged_messages_when_a_node_dies() {
        let mut cluster = NatsCluster::start().await;
        let jetstream = cluster.jetstream().await;
        jetstream
            .create_stream(async_nats::jetstream::stream::Config {
                name: "R3".to_owned(),
                subjects: vec!["r3.>".to_owned()],
                storage: async_nats::jetstream::stream::StorageType::File,
                num_replicas: CLUSTER_SIZE,
                ..Default::default()
            })
            .await
            .unwrap();
        for i in 0..10 {
            jetstream
                .publish("r3.a", format!("{i}").into())
                .await
                .unwrap()
                .await
                .unwrap();
        }
        let mut stream = jetstream.get_stream("R3").await.unwrap();
        let info = stream.info().await.unwrap();
        let cluster_info = info.cluster.clone().unwrap();
        assert_eq!(
            cluster_info.replicas.len(),
            CLUSTER_SIZE - 1,
            "{cluster_info:?}"
        );
        let leader = cluster
            .node_named(cluster_info.leader.as_deref().unwrap())
            .unwrap();

        // The leader dies: the others elect a new one, and every acknowledged message is there.
        cluster.kill(leader);
        assert!(!cluster.is_running(leader));
        let jetstream = cluster.jetstream().await;
        let deadline = Instant::now() + Duration::from_secs(30);
        let messages = loop {
            if let Ok(mut stream) = jetstream.get_stream("R3").await
                && let Ok(info) = stream.info().await
                && info.cluster.as_ref().is_some_and(|c| c.leader.is_some())
            {
                break info.state.messages;
            }
            assert!(Instant::now() < deadline, "no new stream leader");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(messages, 10);

        cluster.restart(leader).await;
        assert!(cluster.is_running(leader));
        let dir = cluster.dir().to_owned();
        drop(cluster);
        assert!(!dir.exists(), "the cluster's directory should be removed");
    }
}
