//! The throwaway cluster lets in the user running the tests and no other local user: its
//! directory and socket are private to the server's user (root passes that), and it asks for the
//! password its url carries.

use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cqrs_postgres::testing::TestCluster;
use tokio_postgres::config::Host;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Config, NoTls};

/// The user who tries to get in, when the tests run as root.
const OTHER_USER: &str = "nobody";

fn cluster() -> &'static TestCluster {
    TestCluster::shared().unwrap_or_else(|error| panic!("{error}"))
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .expect("this process's user")
        .uid()
        == 0
}

/// The mode bits a path has for its group and for others.
fn group_and_other_bits(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()))
        .mode()
        & 0o077
}

/// The server's socket in the cluster's directory.
fn socket(cluster: &TestCluster) -> PathBuf {
    std::fs::read_dir(cluster.root())
        .expect("read the cluster's directory")
        .map(|entry| entry.expect("directory entry"))
        .find(|entry| entry.file_type().is_ok_and(|kind| kind.is_socket()))
        .unwrap_or_else(|| panic!("no socket in {}", cluster.root().display()))
        .path()
}

/// The cluster's connection settings for `postgres` with the password left out, or replaced.
fn config_with_password(cluster: &TestCluster, password: Option<&str>) -> Config {
    let url: Config = cluster.url("postgres").parse().expect("the url parses");
    let mut config = Config::new();
    for host in url.get_hosts() {
        match host {
            Host::Unix(path) => config.host_path(path),
            Host::Tcp(host) => config.host(host),
        };
    }
    for port in url.get_ports() {
        config.port(*port);
    }
    config
        .user(url.get_user().expect("the url has a user"))
        .dbname(url.get_dbname().expect("the url has a database"));
    if let Some(password) = password {
        config.password(password);
    }
    config
}

/// `psql -c 'select 1'` on the cluster's `postgres` database, run as `OTHER_USER`.
fn psql_as_other_user(cluster: &TestCluster, password: Option<&str>) -> Output {
    let psql = cluster.bin_dir().join("psql");
    assert!(psql.is_file(), "no psql next to initdb: {}", psql.display());
    let mut command = Command::new("runuser");
    command
        .args(["-u", OTHER_USER, "--"])
        .arg(psql)
        .arg("-h")
        .arg(cluster.root())
        .args([
            "-U", "postgres", "-d", "postgres", "-X", "-w", "-c", "select 1",
        ])
        .current_dir("/")
        .env("LC_ALL", "C")
        // No password file either: the only password is the one given here, if any.
        .env("PGPASSFILE", "/nonexistent/pgpass")
        .env_remove("PGPASSWORD");
    // Through the environment, not the command line, where every user could read it.
    if let Some(password) = password {
        command.env("PGPASSWORD", password);
    }
    command.output().expect("run psql through runuser")
}

#[test]
fn the_directory_and_the_socket_are_private_to_the_server_user() {
    let cluster = cluster();
    let root = cluster.root();
    assert_eq!(
        group_and_other_bits(root),
        0,
        "{} is open to other users",
        root.display()
    );
    let socket = socket(cluster);
    assert_eq!(
        group_and_other_bits(&socket),
        0,
        "{} is open to other users",
        socket.display()
    );
    println!("{} and {} have mode 0700", root.display(), socket.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_url_connects() {
    let url = cluster().url("postgres");
    let (client, connection) = tokio_postgres::connect(&url, NoTls)
        .await
        .unwrap_or_else(|error| panic!("connect with the cluster's url: {error}"));
    let connection = tokio::spawn(connection);
    let row = client.query_one("SELECT 1", &[]).await.expect("select 1");
    assert_eq!(row.get::<_, i32>(0), 1);
    drop(client);
    let _ = connection.await;
}

#[test]
fn the_debug_output_leaves_out_the_password() {
    let cluster = cluster();
    let url: Config = cluster.url("postgres").parse().expect("the url parses");
    let password = String::from_utf8_lossy(url.get_password().expect("the url has a password"));
    assert!(!password.is_empty());
    assert!(!format!("{cluster:?}").contains(&*password));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_without_the_password_is_refused() {
    let config = config_with_password(cluster(), None);
    match config.connect(NoTls).await {
        // tokio-postgres says so when the server asks for a password it was not given.
        Err(error) => {
            let cause = std::error::Error::source(&error).map(ToString::to_string);
            assert_eq!(
                cause.as_deref(),
                Some("password missing"),
                "refused, but not for want of a password: {error:?}"
            );
        }
        Ok(_) => panic!("connected without the password"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_refused() {
    let config = config_with_password(cluster(), Some("not-the-password"));
    match config.connect(NoTls).await {
        Err(error) => assert_eq!(
            error.code(),
            Some(&SqlState::INVALID_PASSWORD),
            "refused, but not as a wrong password: {error}"
        ),
        Ok(_) => panic!("connected with a wrong password"),
    }
}

#[test]
fn another_local_user_cannot_connect() {
    if !is_root() {
        println!(
            "skipped: switching to `{OTHER_USER}` needs root, and this test runs as another user"
        );
        return;
    }
    let cluster = cluster();
    let url: Config = cluster.url("postgres").parse().expect("the url parses");
    let password = url
        .get_password()
        .map(|password| String::from_utf8_lossy(password).into_owned());
    // Without the password, and with it: the socket is out of reach either way.
    for (attempt, password) in [("without", None), ("with", password.as_deref())] {
        let output = psql_as_other_user(cluster, password);
        let printed = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success(),
            "`{OTHER_USER}` connected {attempt} the password: {}",
            String::from_utf8_lossy(&output.stdout)
        );
        assert!(
            printed.contains("Permission denied"),
            "`{OTHER_USER}` was refused {attempt} the password, but not by the socket's \
             permissions: {printed}"
        );
        println!("`{OTHER_USER}` {attempt} the password: {}", printed.trim());
    }
}
