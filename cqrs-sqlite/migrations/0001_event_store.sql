-- The event store: events, command-id records and snapshots. See the crate documentation
-- (`cqrs_sqlite`, section "Schema").

-- One row per event. `position` is the rowid: the writer assigns max(position) + 1 inside its
-- write transaction (BEGIN IMMEDIATE holds the file's one write lock), so positions are dense and
-- in commit order by construction, and an append rolled back leaves no hole.
CREATE TABLE cqrs_events (
    position        INTEGER PRIMARY KEY CHECK (position > 0),
    stream          TEXT    NOT NULL,
    version         INTEGER NOT NULL CHECK (version > 0),
    -- UUIDs as their 16 bytes.
    event_id        BLOB    NOT NULL,
    event_type      TEXT    NOT NULL,
    schema_version  INTEGER NOT NULL,
    -- The payload's bytes exactly as written.
    payload         BLOB    NOT NULL,
    correlation_id  BLOB,
    causation_id    BLOB,
    command_id      TEXT,
    -- Microseconds since the Unix epoch.
    occurred_at     INTEGER NOT NULL,
    -- A JSON object of strings, as written.
    headers         TEXT    NOT NULL,
    UNIQUE (stream, version)
) STRICT;

-- One row per command id applied to a stream, written in the append's transaction.
CREATE TABLE cqrs_commands (
    stream          TEXT    NOT NULL,
    command_id      TEXT    NOT NULL,
    first_version   INTEGER NOT NULL,
    version         INTEGER NOT NULL,
    -- The position of the append's last event.
    position        INTEGER NOT NULL,
    PRIMARY KEY (stream, command_id)
) STRICT, WITHOUT ROWID;

-- The latest snapshot of each stream.
CREATE TABLE cqrs_snapshots (
    stream          TEXT    PRIMARY KEY,
    version         INTEGER NOT NULL,
    schema_version  INTEGER NOT NULL,
    payload         BLOB    NOT NULL,
    -- Microseconds since the Unix epoch.
    saved_at        INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
