//! A private PostgreSQL cluster (its own `initdb`, port and data directory) that a test may stop and
//! start again, unlike the shared server of [`crate::postgres`], which other tests use at the same
//! time.
//!
//! The binaries (`initdb`, `pg_ctl`) come from `TRUSTMESH_PG_BIN_DIR`, or else from the newest
//! `/usr/lib/postgresql/<version>/bin` (Debian's layout). Postgres refuses to run as root, so when the
//! test runs as root the cluster is created and run as the `postgres` OS user (`runuser`), in a
//! temporary directory handed to that user. Authentication is `trust`, on 127.0.0.1 only.
//! [`PgCluster::start_with_tls`] also serves TLS with a given certificate (`ssl = on`), for tests of
//! `sslmode=verify-full`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The environment variable naming the directory holding `initdb` and `pg_ctl`.
pub const PG_BIN_DIR_ENV: &str = "TRUSTMESH_PG_BIN_DIR";

/// The OS user the cluster runs as when the test runs as root.
const OS_USER: &str = "postgres";

/// The directory holding `initdb` and `pg_ctl`: [`PG_BIN_DIR_ENV`], or the newest
/// `/usr/lib/postgresql/<version>/bin`.
///
/// # Panics
///
/// If neither exists: a test cannot go on without them.
#[must_use]
pub fn pg_bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(PG_BIN_DIR_ENV) {
        return PathBuf::from(dir);
    }
    let versions = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("pg_ctl").is_file().then_some((version, bin))
        });
    versions
        .max_by_key(|(version, _)| *version)
        .map(|(_, bin)| bin)
        .unwrap_or_else(|| {
            panic!("no PostgreSQL binaries under /usr/lib/postgresql; set ${PG_BIN_DIR_ENV}")
        })
}

/// A running private Postgres cluster, stopped (immediately) and removed on drop.
#[derive(Debug)]
pub struct PgCluster {
    bin: PathBuf,
    port: u16,
    as_os_user: bool,
    running: bool,
    /// Extra `-c name=value` options of the server.
    extra_options: String,
    dir: tempfile::TempDir,
}

impl PgCluster {
    /// Creates a cluster (`initdb`, trust authentication, superuser `postgres`) in a fresh temporary
    /// directory and starts it on a free loopback port.
    ///
    /// # Panics
    ///
    /// If the binaries are missing, or the cluster cannot be created or started.
    pub async fn start() -> Self {
        Self::start_with(None).await
    }

    /// Like [`PgCluster::start`], with TLS on (`ssl = on`, plaintext still accepted): the server
    /// presents the certificate chain `cert` (PEM) with the private key `key` (PEM), copied into the
    /// cluster's directory with the owner and mode Postgres requires.
    ///
    /// # Panics
    ///
    /// As [`PgCluster::start`], or if the files cannot be copied.
    pub async fn start_with_tls(cert: &Path, key: &Path) -> Self {
        Self::start_with(Some((cert, key))).await
    }

    async fn start_with(tls: Option<(&Path, &Path)>) -> Self {
        let as_os_user = running_as_root();
        let dir = tempfile::Builder::new()
            .prefix("trustmesh-pg-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temp dir for postgres: {e}"));
        if as_os_user {
            run(
                Command::new("chown").arg(OS_USER).arg(dir.path()),
                "chown the postgres directory",
            );
        }
        let mut cluster = Self {
            bin: pg_bin_dir(),
            port: 0,
            as_os_user,
            running: false,
            extra_options: String::new(),
            dir,
        };
        if let Some((cert, key)) = tls {
            cluster.extra_options = cluster.install_tls(cert, key);
        }
        run(
            cluster
                .command("initdb")
                .arg("-D")
                .arg(cluster.data_dir())
                .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"]),
            "initdb",
        );
        // NOTE: the port is found by binding port 0 and releasing it, so another process could take it
        // before postgres binds; a few attempts make that race harmless.
        let mut last_error = String::new();
        for _ in 0..5 {
            cluster.port = crate::ports::free_port();
            match cluster.pg_ctl_start() {
                Ok(()) => return cluster,
                Err(e) => last_error = e,
            }
        }
        panic!("postgres did not start: {last_error}");
    }

    /// The server's port on 127.0.0.1 (the same after [`PgCluster::restart`]).
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A connection URL for `database` as the superuser `postgres` (no password: trust).
    #[must_use]
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Whether the server runs.
    #[must_use]
    pub fn is_running(&self) -> bool {
        self.running
    }

    /// Stops the server at once (`pg_ctl stop -m immediate`: no checkpoint, connections cut, crash
    /// recovery on the next start), as when it crashes. Does nothing if it is already stopped.
    ///
    /// # Panics
    ///
    /// If `pg_ctl` fails.
    pub async fn stop(&mut self) {
        if !self.running {
            return;
        }
        let mut stop = self.pg_ctl_stop();
        tokio::task::spawn_blocking(move || run(&mut stop, "pg_ctl stop"))
            .await
            .unwrap_or_else(|e| panic!("pg_ctl stop did not finish: {e}"));
        self.running = false;
    }

    /// Stops the server if it runs (immediately) and starts it again on the same port and data
    /// directory; returns once it accepts connections.
    ///
    /// # Panics
    ///
    /// If it does not come back.
    pub async fn restart(&mut self) {
        self.stop().await;
        let mut start = self.pg_ctl_start_command();
        let result = tokio::task::spawn_blocking(move || output(&mut start))
            .await
            .unwrap_or_else(|e| panic!("pg_ctl start did not finish: {e}"));
        if let Err(e) = result {
            panic!("postgres did not restart on port {}: {e}", self.port);
        }
        self.running = true;
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_file(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    /// `program` from the binaries' directory, run as the cluster's OS user when needed.
    fn command(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        let mut command = if self.as_os_user {
            let mut command = Command::new("runuser");
            command.args(["-u", OS_USER, "--"]).arg(program);
            command
        } else {
            Command::new(program)
        };
        // NOTE: runuser keeps the working directory, which the postgres user may not be able to read.
        command.current_dir(self.dir.path());
        command
    }

    fn pg_ctl_start_command(&self) -> Command {
        let mut command = self.command("pg_ctl");
        // The socket goes to the cluster's directory (the default one may not be writable), and
        // fsync is off: the tests stop the server, never the machine, so the OS keeps every write.
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200{}",
            self.port,
            self.dir.path().display(),
            self.extra_options
        );
        command
            .args(["start", "-w", "-t", "60", "-D"])
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.log_file())
            .args(["-o", &options]);
        command
    }

    /// Copies the server's certificate and key into the cluster's directory (the key readable by the
    /// server's OS user only, as Postgres demands) and returns the server options turning TLS on.
    fn install_tls(&self, cert: &Path, key: &Path) -> String {
        let (cert_file, key_file) = (
            self.dir.path().join("server.crt"),
            self.dir.path().join("server.key"),
        );
        for (from, to) in [(cert, &cert_file), (key, &key_file)] {
            std::fs::copy(from, to)
                .unwrap_or_else(|e| panic!("cannot copy {} for postgres: {e}", from.display()));
        }
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600))
                .unwrap_or_else(|e| panic!("cannot restrict the postgres key: {e}"));
        }
        if self.as_os_user {
            run(
                Command::new("chown")
                    .arg(OS_USER)
                    .arg(&cert_file)
                    .arg(&key_file),
                "chown the postgres certificate",
            );
        }
        format!(
            " -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
            cert_file.display(),
            key_file.display()
        )
    }

    fn pg_ctl_start(&mut self) -> Result<(), String> {
        output(&mut self.pg_ctl_start_command())?;
        self.running = true;
        Ok(())
    }

    fn pg_ctl_stop(&self) -> Command {
        let mut command = self.command("pg_ctl");
        command
            .args(["stop", "-w", "-m", "immediate", "-D"])
            .arg(self.data_dir());
        command
    }

    /// The server's log, for a failing test's message.
    #[must_use]
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_file()).unwrap_or_default()
    }

    /// The cluster's directory (data directory, socket and log).
    #[must_use]
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if self.running {
            let _ = output(&mut self.pg_ctl_stop());
        }
    }
}

/// Whether this process runs as root (uid 0), read from `/proc/self/status`.
fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find_map(|line| line.strip_prefix("Uid:"))
            .and_then(|uids| uids.split_whitespace().next())
            == Some("0")
    })
}

/// Runs `command`; its output, or why it failed (with its stderr).
fn output(command: &mut Command) -> Result<String, String> {
    let out = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {command:?}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{command:?} exited with {}: {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Runs `command`, panicking (naming `what`) if it fails.
fn run(command: &mut Command, what: &str) {
    if let Err(e) = output(command) {
        panic!("{what} failed: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::{Connection as _, Executor as _};

    async fn select_one(cluster: &PgCluster) -> Result<i32, sqlx::Error> {
        let mut conn = sqlx::PgConnection::connect(&cluster.url("postgres")).await?;
        sqlx::query_scalar("SELECT 1").fetch_one(&mut conn).await
    }

    #[tokio::test]
    async fn starts_stops_and_restarts_keeping_its_data() {
        let mut cluster = PgCluster::start().await;
        assert_eq!(select_one(&cluster).await.unwrap(), 1);
        let mut conn = sqlx::PgConnection::connect(&cluster.url("postgres"))
            .await
            .unwrap();
        conn.execute("CREATE TABLE kept (n int); INSERT INTO kept VALUES (7)")
            .await
            .unwrap();

        cluster.stop().await;
        assert!(!cluster.is_running());
        assert!(select_one(&cluster).await.is_err(), "the server is down");

        cluster.restart().await;
        assert!(cluster.is_running());
        let mut conn = sqlx::PgConnection::connect(&cluster.url("postgres"))
            .await
            .unwrap();
        let n: i32 = sqlx::query_scalar("SELECT n FROM kept")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(n, 7, "committed rows survive an immediate stop");

        let dir = cluster.dir().to_owned();
        drop(cluster);
        assert!(!dir.exists(), "the cluster's directory should be removed");
    }
}
