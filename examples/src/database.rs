//! Where the examples keep their events: in memory by default, or in PostgreSQL when given a
//! database URL with `--database-url <url>` or the `DATABASE_URL` environment variable.

use cqrs_core::StoreError;
use cqrs_postgres::PostgresStore;

/// The command-line flag that names the database.
pub const DATABASE_URL_FLAG: &str = "--database-url";

/// The environment variable read when the flag is absent.
pub const DATABASE_URL_VAR: &str = "DATABASE_URL";

/// The flag was given without a URL.
#[derive(Debug, thiserror::Error)]
#[error(
    "`{DATABASE_URL_FLAG}` needs a value, e.g. `{DATABASE_URL_FLAG} postgres://app@localhost/app`"
)]
pub struct MissingUrl;

/// The database URL from `--database-url <url>` (or `--database-url=<url>`) in `args`, else from
/// `DATABASE_URL`; `None` means "use the in-memory store".
pub fn database_url(args: impl IntoIterator<Item = String>) -> Result<Option<String>, MissingUrl> {
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        if arg == DATABASE_URL_FLAG {
            return args.next().map(Some).ok_or(MissingUrl);
        }
        if let Some(url) = arg
            .strip_prefix(DATABASE_URL_FLAG)
            .and_then(|rest| rest.strip_prefix('='))
        {
            return Ok(Some(url.to_owned()));
        }
    }
    Ok(std::env::var(DATABASE_URL_VAR)
        .ok()
        .filter(|url| !url.is_empty()))
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

    fn args(items: &[&str]) -> Vec<String> {
        items.iter().map(|item| (*item).to_owned()).collect()
    }

    #[test]
    fn the_flag_names_the_database() {
        let url = database_url(args(&["--database-url", "postgres://a/b"]));
        assert_eq!(url.ok().flatten().as_deref(), Some("postgres://a/b"));
        let url = database_url(args(&["--database-url=postgres://c/d"]));
        assert_eq!(url.ok().flatten().as_deref(), Some("postgres://c/d"));
        assert!(database_url(args(&["--database-url"])).is_err());
    }
}
