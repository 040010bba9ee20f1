//! A throwaway PostgreSQL cluster for tests: `initdb` into a fresh temporary directory, a server
//! that listens on a unix socket in that directory only, and a fresh database per test; and
//! given / then for PostgreSQL projections on it ([`PostgresProjectionTest`]).
//!
//! ```no_run
//! use cqrs_postgres::testing::TestCluster;
//! use cqrs_postgres::PostgresStore;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // One cluster for the whole test binary, stopped and removed when the process exits.
//! let cluster = TestCluster::shared()?;
//! let store = PostgresStore::new(&cluster.create_database().await?)?;
//! store.migrate().await?;
//! # Ok(())
//! # }
//! ```
//!
//! PostgreSQL refuses to run as root: when the process is root, the server binaries run as the
//! `postgres` user (or the user `CQRS_PG_USER` names) through `runuser`, and the directory is
//! handed to that user. The binaries are looked up in `CQRS_PG_BIN`, then
//! `/usr/lib/postgresql/<newest>/bin`, then `PATH`; when they are missing the error says to run
//! `scripts/ensure-postgres`.
//!
//! # Access
//!
//! Only the user running the tests and the server's user can connect. The directory (data,
//! socket, server log) is created with mode 0700 and handed to the server's user, and the server
//! creates its socket with mode 0700: other local users cannot reach the socket at all. Root, which
//! runs the tests when the server runs as `postgres`, passes those permissions as it passes every
//! file permission; otherwise the server's user is the one running the tests. On top of that the
//! cluster asks for a password (`scram-sha-256`, for socket and TCP connections alike): a fresh
//! random one per cluster, handed to `initdb` in a file of mode 0600 that is removed right after,
//! and otherwise kept in this process's memory. [`TestCluster::url`] carries it; the cluster's
//! `Debug` output does not show it.
//!
//! # Cleaning up
//!
//! Every cluster has a watchdog: a small shell process, in its own process group, that reads
//! a pipe whose only writer is this process. When this process ends, however it ends (a normal
//! exit, a panic, `kill -9`), the pipe closes, and the watchdog stops the server (immediate
//! shutdown) and removes the directory. So a test binary that never runs destructors (statics
//! are not dropped) still leaves no postmaster behind. Dropping a [`TestCluster`] does the same
//! at once.

use std::fmt;
use std::fs::{DirBuilder, OpenOptions};
use std::io::{Read as _, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

mod projection;

pub use self::projection::{PostgresProjectionTest, ProjectionTestError};

/// The statement a store sends for a batch of appends (`src/append.sql`), for tests that run it
/// under a snapshot of their choosing. Parameters as `cqrs_append_batch` takes them.
pub const APPEND_SQL: &str = crate::batch::APPEND;

/// The statement a store sends for a lone append of one event at an exact version without a
/// command id (`src/append_one.sql`), for tests that run it under a snapshot of their choosing.
pub const APPEND_ONE_SQL: &str = crate::batch::APPEND_ONE;

/// Why a throwaway cluster could not be started or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// `initdb` and `pg_ctl` were not found.
    #[error(
        "PostgreSQL server binaries (initdb, pg_ctl) not found in CQRS_PG_BIN, \
         /usr/lib/postgresql/*/bin or PATH: run `scripts/ensure-postgres` (it installs them), \
         or set CQRS_PG_BIN to their directory"
    )]
    BinariesMissing,
    /// The process is root and the user to run the server as does not exist.
    #[error(
        "running as root, the PostgreSQL server must run as another user, and `{user}` does not \
         exist: run `scripts/ensure-postgres` (it creates it) or set CQRS_PG_USER"
    )]
    NoServerUser {
        /// The user looked for.
        user: String,
    },
    /// A file system step failed.
    #[error("cannot {step}: {source}")]
    Io {
        /// What was being done.
        step: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A PostgreSQL command failed.
    #[error("`{command}` failed ({status}): {output}")]
    Command {
        /// The command.
        command: String,
        /// Its exit status.
        status: String,
        /// What it printed (and the server log, for a failed start).
        output: String,
    },
    /// The server could not be reached or refused a statement.
    #[error("cannot set up a test database: {0}")]
    Database(#[from] tokio_postgres::Error),
    /// The shared cluster failed to start earlier in this process.
    #[error("the shared test cluster failed to start: {0}")]
    SharedFailed(String),
}

fn io(step: impl Into<String>) -> impl FnOnce(std::io::Error) -> ClusterError {
    let step = step.into();
    move |source| ClusterError::Io { step, source }
}

/// A running throwaway cluster. See the [module documentation](self).
pub struct TestCluster {
    root: PathBuf,
    port: u16,
    bin: PathBuf,
    /// The superuser's password; never printed (the `Debug` impl leaves it out).
    password: String,
    /// The write end of the watchdog's pipe; dropping it tells the watchdog to clean up.
    watchdog: Mutex<Option<Child>>,
}

impl fmt::Debug for TestCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestCluster")
            .field("root", &self.root)
            .field("port", &self.port)
            .field("bin", &self.bin)
            .finish_non_exhaustive()
    }
}

/// The PostgreSQL superuser the clusters are created with.
const SUPERUSER: &str = "postgres";

/// Stops the server whose data directory is in `$1` and removes `$1`, once standard input closes.
const WATCHDOG: &str = r#"
cat >/dev/null 2>&1
pidfile="$1/data/postmaster.pid"
if [ -f "$pidfile" ]; then
    pid=$(head -n 1 "$pidfile")
    if [ -n "$pid" ]; then
        kill -QUIT "$pid" 2>/dev/null
        i=0
        while kill -0 "$pid" 2>/dev/null && [ "$i" -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
        kill -KILL "$pid" 2>/dev/null
    fi
fi
rm -rf "$1"
"#;

impl TestCluster {
    /// The cluster shared by every test of this process, started on first use.
    pub fn shared() -> Result<&'static TestCluster, ClusterError> {
        static SHARED: OnceLock<Result<TestCluster, String>> = OnceLock::new();
        SHARED
            .get_or_init(|| TestCluster::start().map_err(|error| error.to_string()))
            .as_ref()
            .map_err(|message| ClusterError::SharedFailed(message.clone()))
    }

    /// Creates and starts a new cluster (blocking: it runs `initdb` and `pg_ctl`).
    pub fn start() -> Result<TestCluster, ClusterError> {
        let bin = find_binaries()?;
        let server_user = server_user()?;
        let root = fresh_directory()?;
        // The watchdog comes first, so that a failure below still removes the directory.
        let watchdog = Command::new("sh")
            .arg("-c")
            .arg(WATCHDOG)
            .arg("cqrs-pg-watchdog")
            .arg(&root)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group: a Ctrl-C to the test run must not kill it before it cleans.
            .process_group(0)
            .spawn()
            .map_err(io("start the cluster's watchdog"))?;
        let cluster = TestCluster {
            root,
            port: 5432,
            bin,
            password: random_password()?,
            watchdog: Mutex::new(Some(watchdog)),
        };
        if let Some((uid, gid)) = server_user {
            std::os::unix::fs::chown(&cluster.root, Some(uid), Some(gid)).map_err(io(format!(
                "hand {} to the server user",
                cluster.root.display()
            )))?;
        }
        let data = cluster.root.join("data");
        // initdb reads the password from a file; it lives only as long as initdb runs.
        let password_file = cluster.root.join("password");
        write_private(&password_file, &cluster.password, server_user)?;
        let mut password_option = std::ffi::OsString::from("--pwfile=");
        password_option.push(&password_file);
        let initdb = run(
            server_user.is_some(),
            &cluster.bin.join("initdb"),
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-U".as_ref(),
                SUPERUSER.as_ref(),
                &password_option,
                // Sockets and TCP alike (TCP is off anyway, see listen_addresses below).
                "--auth=scram-sha-256".as_ref(),
                "-E".as_ref(),
                "UTF8".as_ref(),
                "--locale=C".as_ref(),
                // Only initdb's own files skip fsync; the server below keeps `fsync = on`.
                "--no-sync".as_ref(),
            ],
            None,
        );
        let removed = std::fs::remove_file(&password_file)
            .map_err(io(format!("remove {}", password_file.display())));
        initdb?;
        removed?;
        let mut conf = OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .map_err(io("open postgresql.conf"))?;
        writeln!(
            conf,
            "\n# cqrs-postgres throwaway cluster\nlisten_addresses = ''\n\
             unix_socket_directories = '{}'\nunix_socket_permissions = 0700\nport = {}\n\
             max_connections = 300\nfsync = on\n",
            cluster.root.display(),
            cluster.port
        )
        .map_err(io("write postgresql.conf"))?;
        let log = cluster.root.join("server.log");
        run(
            server_user.is_some(),
            &cluster.bin.join("pg_ctl"),
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-l".as_ref(),
                log.as_os_str(),
                "-w".as_ref(),
                "-t".as_ref(),
                "120".as_ref(),
                "start".as_ref(),
            ],
            Some(&log),
        )?;
        Ok(cluster)
    }

    /// The directory holding the data, the socket and the server log.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of the PostgreSQL binaries this cluster was made with (`initdb`, `pg_ctl`,
    /// and where installed, `psql` and `pgbench`).
    pub fn bin_dir(&self) -> &Path {
        &self.bin
    }

    /// The connection string of `database` on this cluster, password included: do not print it.
    pub fn url(&self, database: &str) -> String {
        format!(
            "host={} port={} user={SUPERUSER} password={} dbname={}",
            quote(&self.root.to_string_lossy()),
            self.port,
            quote(&self.password),
            quote(database)
        )
    }

    /// Creates a fresh, empty database and returns its connection string.
    pub async fn create_database(&self) -> Result<String, ClusterError> {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let name = format!(
            "cqrs_test_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let (client, connection) =
            tokio_postgres::connect(&self.url("postgres"), tokio_postgres::NoTls).await?;
        let connection = tokio::spawn(connection);
        // The name is ours (letters, digits, underscores): nothing from outside reaches the SQL.
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await?;
        drop(client);
        let _ = connection.await;
        Ok(self.url(&name))
    }

    /// Stops the server in `mode`, leaves it down for `down_for`, and starts it again on the same
    /// data (blocking: it runs `pg_ctl`). Every connection is cut; the data survives. A fault
    /// test's tool: call it from `spawn_blocking` while the code under test runs.
    pub fn restart(
        &self,
        mode: StopMode,
        down_for: std::time::Duration,
    ) -> Result<(), ClusterError> {
        let as_server_user = server_user()?.is_some();
        let pg_ctl = self.bin.join("pg_ctl");
        let data = self.root.join("data");
        let log = self.root.join("server.log");
        run(
            as_server_user,
            &pg_ctl,
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-m".as_ref(),
                mode.as_str().as_ref(),
                "-w".as_ref(),
                "stop".as_ref(),
            ],
            Some(&log),
        )?;
        std::thread::sleep(down_for);
        run(
            as_server_user,
            &pg_ctl,
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-l".as_ref(),
                log.as_os_str(),
                "-w".as_ref(),
                "-t".as_ref(),
                "120".as_ref(),
                "start".as_ref(),
            ],
            Some(&log),
        )
    }

    /// Stops the server at once and removes the directory, waiting until both are done.
    pub fn stop(&self) {
        let watchdog = self
            .watchdog
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(mut watchdog) = watchdog {
            // Closing its standard input is the signal.
            drop(watchdog.stdin.take());
            let _ = watchdog.wait();
        }
    }
}

/// How [`TestCluster::restart`] stops the server (`pg_ctl stop -m ...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// Sessions are cut, the server checkpoints and exits cleanly.
    Fast,
    /// The server exits at once, without a checkpoint, as after a crash: it recovers from the
    /// WAL when started again.
    Immediate,
}

impl StopMode {
    fn as_str(self) -> &'static str {
        match self {
            StopMode::Fast => "fast",
            StopMode::Immediate => "immediate",
        }
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Quotes a connection-string value.
fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

fn find_binaries() -> Result<PathBuf, ClusterError> {
    let usable = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Some(dir) = std::env::var_os("CQRS_PG_BIN") {
        let dir = PathBuf::from(dir);
        return if usable(&dir) {
            Ok(dir)
        } else {
            Err(ClusterError::BinariesMissing)
        };
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            usable(&bin).then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .find(|dir| usable(dir))
        .ok_or(ClusterError::BinariesMissing)
}

/// `Some((uid, gid))` of the user to run the server as when this process is root.
fn server_user() -> Result<Option<(u32, u32)>, ClusterError> {
    let uid = std::fs::metadata("/proc/self")
        .map(|metadata| metadata.uid())
        .map_err(io("find this process's user"))?;
    if uid != 0 {
        return Ok(None);
    }
    let user = std::env::var("CQRS_PG_USER").unwrap_or_else(|_| SUPERUSER.to_owned());
    let id = |flag: &str| -> Option<u32> {
        let output = Command::new("id").arg(flag).arg(&user).output().ok()?;
        if !output.status.success() {
            return None;
        }
        String::from_utf8(output.stdout).ok()?.trim().parse().ok()
    };
    match (id("-u"), id("-g")) {
        (Some(uid), Some(gid)) if uid != 0 => Ok(Some((uid, gid))),
        _ => Err(ClusterError::NoServerUser { user }),
    }
}

/// A fresh password: 16 random bytes, hex-encoded (nothing in it needs quoting).
fn random_password() -> Result<String, ClusterError> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut bytes))
        .map_err(io("read /dev/urandom"))?;
    Ok(bytes.iter().map(|byte| format!("{byte:02x}")).collect())
}

/// Writes `contents` to a new file of mode 0600 at `path`, owned by the server user if there is
/// one (which must read it).
fn write_private(
    path: &Path,
    contents: &str,
    server_user: Option<(u32, u32)>,
) -> Result<(), ClusterError> {
    let step = || format!("write {}", path.display());
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io(step()))?;
    if let Some((uid, gid)) = server_user {
        std::os::unix::fs::fchown(&file, Some(uid), Some(gid)).map_err(io(step()))?;
    }
    file.write_all(contents.as_bytes()).map_err(io(step()))
}

fn fresh_directory() -> Result<PathBuf, ClusterError> {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.subsec_nanos())
        .unwrap_or(0);
    // A short path: the socket's path must fit in 107 bytes.
    let root = PathBuf::from("/tmp").join(format!("cqrs-pg-{}-{nanos:x}", std::process::id()));
    // 0700 from the start: no moment in which another user could reach into it.
    DirBuilder::new()
        .mode(0o700)
        .create(&root)
        .map_err(io(format!("create {}", root.display())))?;
    Ok(root)
}

/// Runs a server binary, as the server user through `runuser` when `as_server_user`.
fn run(
    as_server_user: bool,
    program: &Path,
    args: &[&std::ffi::OsStr],
    log: Option<&Path>,
) -> Result<(), ClusterError> {
    let mut command = if as_server_user {
        let user = std::env::var("CQRS_PG_USER").unwrap_or_else(|_| SUPERUSER.to_owned());
        let mut command = Command::new("runuser");
        command.arg("-u").arg(user).arg("--").arg(program);
        command
    } else {
        Command::new(program)
    };
    command.args(args).stdin(Stdio::null());
    let output = command
        .output()
        .map_err(io(format!("run {}", program.display())))?;
    if output.status.success() {
        return Ok(());
    }
    let mut printed = String::from_utf8_lossy(&output.stdout).into_owned();
    printed.push_str(&String::from_utf8_lossy(&output.stderr));
    if let Some(log) = log.and_then(|log| std::fs::read_to_string(log).ok()) {
        printed.push_str("\nserver log:\n");
        printed.push_str(&log);
    }
    Err(ClusterError::Command {
        command: program.display().to_string(),
        status: output.status.to_string(),
        output: printed,
    })
}
