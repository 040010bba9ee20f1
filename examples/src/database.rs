//! Where the examples keep their events: in a SQLite file by default, in memory with
//! `--memory`, or in PostgreSQL when given a `postgres://` URL.
//!
//! ```text
//! (no flag)                  the SQLite file the example names, in the working directory
//! --database PATH            a SQLite file at PATH (also `sqlite://PATH` or a PostgreSQL URL)
//! --database-url URL         a `sqlite://PATH` URL, else PostgreSQL (`postgres://...`, `key=value`)
//! DATABASE_URL=URL           the same as `--database-url URL`, when no flag says otherwise
//! --memory                   the in-memory store: nothing is kept
//! ```
//!
//! A SQLite file or a PostgreSQL database may be new (the schema is created) or hold earlier
//! runs, which a run continues: see [`EarlierRuns`](crate::earlier_runs::EarlierRuns).

use std::fmt;
use std::path::{Path, PathBuf};

use cqrs_core::StoreError;
use cqrs_postgres::PostgresStore;
use cqrs_sqlite::SqliteStore;

/// The flag that names a SQLite file (or any URL [`DATABASE_URL_FLAG`] takes).
pub const DATABASE_FLAG: &str = "--database";

/// The flag that names the database by URL.
pub const DATABASE_URL_FLAG: &str = "--database-url";

/// The flag that chooses the in-memory store.
pub const MEMORY_FLAG: &str = "--memory";

/// The environment variable read when no flag names the database.
pub const DATABASE_URL_VAR: &str = "DATABASE_URL";

/// How a URL names a SQLite file: `sqlite://PATH` (`sqlite:///abs/path` for an absolute one).
pub const SQLITE_SCHEME: &str = "sqlite://";

/// The options the examples take, for `--help` and usage errors.
pub const USAGE: &str = "\
options:
  --database PATH       keep the events in the SQLite file PATH (the default names a file in the
                        working directory); `sqlite://PATH` and `postgres://...` work too
  --database-url URL    a `sqlite://PATH` URL, or a PostgreSQL URL or `key=value` string
  --memory              keep the events in memory: nothing is left when the run ends
  -h, --help            print this
environment:
  DATABASE_URL          the same as --database-url, when no option names the database";

/// Where the events are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Database {
    /// A SQLite file, created when missing.
    Sqlite(PathBuf),
    /// The in-memory store: gone when the process ends.
    Memory,
    /// A PostgreSQL database, by anything `tokio-postgres` accepts.
    Postgres(String),
}

/// The command line could not be understood; the examples print it with [`USAGE`] and exit 2.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsageError {
    /// `--help` was asked for: not a mistake, but no run either.
    #[error("usage")]
    Help,
    /// A flag that takes a value came last.
    #[error("`{0}` needs a value, e.g. `{0} shows.db`")]
    MissingValue(&'static str),
    /// A flag or argument the examples do not know.
    #[error("unknown argument `{0}`")]
    Unknown(String),
    /// Two flags name the database.
    #[error("`{0}` and `{1}` both say where the events go: give one")]
    Conflicting(String, String),
    /// `sqlite://` with nothing after it.
    #[error("`{0}` names no file: write `sqlite://shows.db` or `sqlite:///var/lib/shows.db`")]
    EmptySqlitePath(String),
}

impl Database {
    /// Reads the command line `args` (without the program's name) and `DATABASE_URL`;
    /// `default_file` is the SQLite file used when neither names a database.
    pub fn from_args(
        args: impl IntoIterator<Item = String>,
        default_file: &str,
    ) -> Result<Self, UsageError> {
        let variable = std::env::var(DATABASE_URL_VAR).ok();
        Self::parse(args, variable, default_file)
    }

    /// [`from_args`](Self::from_args) with the environment variable's value given, for tests.
    /// An empty variable counts as unset; a flag wins over the variable.
    pub fn parse(
        args: impl IntoIterator<Item = String>,
        variable: Option<String>,
        default_file: &str,
    ) -> Result<Self, UsageError> {
        let mut chosen: Option<(String, Database)> = None;
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let (flag, inline) = match arg.split_once('=') {
                Some((flag, value)) if flag.starts_with("--") => (flag.to_owned(), Some(value)),
                _ => (arg.clone(), None),
            };
            let database = match flag.as_str() {
                "-h" | "--help" => return Err(UsageError::Help),
                MEMORY_FLAG if inline.is_none() => Database::Memory,
                DATABASE_FLAG => {
                    Self::from_path_or_url(value_of(DATABASE_FLAG, inline, &mut args)?)?
                }
                DATABASE_URL_FLAG => {
                    Self::from_url(value_of(DATABASE_URL_FLAG, inline, &mut args)?)?
                }
                _ => return Err(UsageError::Unknown(arg)),
            };
            if let Some((earlier, _)) = &chosen {
                return Err(UsageError::Conflicting(earlier.clone(), flag));
            }
            chosen = Some((flag, database));
        }
        match (chosen, variable.filter(|url| !url.is_empty())) {
            (Some((_, database)), _) => Ok(database),
            (None, Some(url)) => Self::from_url(url),
            (None, None) => Ok(Database::Sqlite(PathBuf::from(default_file))),
        }
    }

    /// A URL: `sqlite://PATH` is a file; anything else goes to PostgreSQL, as it always did.
    fn from_url(url: String) -> Result<Self, UsageError> {
        match url.strip_prefix(SQLITE_SCHEME) {
            Some("") => Err(UsageError::EmptySqlitePath(url)),
            Some(path) => Ok(Database::Sqlite(PathBuf::from(path))),
            None => Ok(Database::Postgres(url)),
        }
    }

    /// A path, unless it is a `sqlite://` or PostgreSQL URL (a `key=value` string is a path here:
    /// a file may have `=` in its name; pass those with `--database-url`).
    fn from_path_or_url(value: String) -> Result<Self, UsageError> {
        if value.starts_with(SQLITE_SCHEME)
            || value.starts_with("postgres://")
            || value.starts_with("postgresql://")
        {
            Self::from_url(value)
        } else {
            Ok(Database::Sqlite(PathBuf::from(value)))
        }
    }
}

/// The value of `flag`: what followed its `=`, else the next argument unless that is a flag
/// (`--database --memory` forgot the path); never empty.
fn value_of(
    flag: &'static str,
    inline: Option<&str>,
    args: &mut impl Iterator<Item = String>,
) -> Result<String, UsageError> {
    let value = match inline {
        Some(value) => value.to_owned(),
        None => args
            .next()
            .filter(|next| !next.starts_with("--"))
            .unwrap_or_default(),
    };
    if value.is_empty() {
        return Err(UsageError::MissingValue(flag));
    }
    Ok(value)
}

impl fmt::Display for Database {
    /// `SQLite (shows.db)`, `memory`, `PostgreSQL`: the URL is not shown, it may hold a password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Database::Sqlite(path) => write!(f, "SQLite ({})", path.display()),
            Database::Memory => write!(f, "memory"),
            Database::Postgres(_) => write!(f, "PostgreSQL"),
        }
    }
}

/// Opens (or creates) the SQLite file at `path` and creates or upgrades its schema, so a new
/// file and one left by earlier runs both work.
pub async fn open_sqlite(path: &Path) -> Result<SqliteStore, StoreError> {
    let store = SqliteStore::open(path).await?;
    store.migrate().await?;
    Ok(store)
}

/// Connects to the PostgreSQL database at `url` and creates or upgrades the schema, so an
/// empty database and one left by earlier runs both work.
pub async fn connect(url: &str) -> Result<PostgresStore, StoreError> {
    let store = PostgresStore::new(url)?;
    store.migrate().await?;
    Ok(store)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULT: &str = "story.db";

    fn parse(items: &[&str], variable: Option<&str>) -> Result<Database, UsageError> {
        let args = items.iter().map(|item| (*item).to_owned());
        Database::parse(args, variable.map(str::to_owned), DEFAULT)
    }

    fn sqlite(path: &str) -> Result<Database, UsageError> {
        Ok(Database::Sqlite(PathBuf::from(path)))
    }

    #[test]
    fn without_flags_the_events_go_to_the_default_file() {
        assert_eq!(parse(&[], None), sqlite(DEFAULT));
        assert_eq!(
            parse(&[], Some("")),
            sqlite(DEFAULT),
            "empty counts as unset"
        );
    }

    #[test]
    fn the_database_flag_takes_a_path_or_a_url() {
        assert_eq!(parse(&["--database", "a/b.db"], None), sqlite("a/b.db"));
        assert_eq!(parse(&["--database=c.db"], None), sqlite("c.db"));
        assert_eq!(
            parse(&["--database", "sqlite://d.db"], None),
            sqlite("d.db")
        );
        assert_eq!(
            parse(&["--database", "sqlite:///var/e.db"], None),
            sqlite("/var/e.db")
        );
        assert_eq!(
            parse(&["--database", "postgres://a/b"], None),
            Ok(Database::Postgres("postgres://a/b".to_owned()))
        );
        assert_eq!(parse(&["--database", "x=y.db"], None), sqlite("x=y.db"));
    }

    #[test]
    fn a_url_is_sqlite_by_its_scheme_and_postgresql_otherwise() {
        assert_eq!(
            parse(&["--database-url", "sqlite://f.db"], None),
            sqlite("f.db")
        );
        assert_eq!(
            parse(&["--database-url=postgres://c/d"], None),
            Ok(Database::Postgres("postgres://c/d".to_owned()))
        );
        assert_eq!(
            parse(&["--database-url", "host=/run/postgresql dbname=app"], None),
            Ok(Database::Postgres(
                "host=/run/postgresql dbname=app".to_owned()
            ))
        );
        assert_eq!(parse(&[], Some("sqlite://g.db")), sqlite("g.db"));
        assert_eq!(
            parse(&[], Some("postgres://h/i")),
            Ok(Database::Postgres("postgres://h/i".to_owned()))
        );
    }

    #[test]
    fn a_flag_wins_over_the_environment() {
        assert_eq!(
            parse(&["--memory"], Some("postgres://a/b")),
            Ok(Database::Memory)
        );
        assert_eq!(
            parse(&["--database", "j.db"], Some("postgres://a/b")),
            sqlite("j.db")
        );
    }

    #[test]
    fn mistakes_are_usage_errors() {
        assert_eq!(
            parse(&["--database"], None),
            Err(UsageError::MissingValue(DATABASE_FLAG))
        );
        assert_eq!(
            parse(&["--database-url"], None),
            Err(UsageError::MissingValue(DATABASE_URL_FLAG))
        );
        assert_eq!(
            parse(&["--database", "--memory"], None),
            Err(UsageError::MissingValue(DATABASE_FLAG))
        );
        assert_eq!(
            parse(&["--database="], None),
            Err(UsageError::MissingValue(DATABASE_FLAG))
        );
        assert_eq!(
            parse(&["--databse", "k.db"], None),
            Err(UsageError::Unknown("--databse".to_owned()))
        );
        assert_eq!(
            parse(&["k.db"], None),
            Err(UsageError::Unknown("k.db".to_owned()))
        );
        assert_eq!(
            parse(&["--memory=yes"], None),
            Err(UsageError::Unknown("--memory=yes".to_owned()))
        );
        assert_eq!(
            parse(&["--memory", "--database", "l.db"], None),
            Err(UsageError::Conflicting(
                "--memory".to_owned(),
                "--database".to_owned()
            ))
        );
        assert!(matches!(
            parse(&["--database-url", "sqlite://"], None),
            Err(UsageError::EmptySqlitePath(_))
        ));
        assert_eq!(parse(&["--help"], None), Err(UsageError::Help));
    }

    #[test]
    fn the_description_hides_a_postgresql_url() {
        let url = Database::Postgres("postgres://app:secret@db/app".to_owned());
        assert_eq!(url.to_string(), "PostgreSQL");
        assert_eq!(
            Database::Sqlite(PathBuf::from("m.db")).to_string(),
            "SQLite (m.db)"
        );
    }
}
