-- Processors: the checkpoints and dead letters of projections and sagas, and the instances of
-- sagas. See the modules `cqrs_sqlite::processor` and `cqrs_sqlite::saga`.

-- One row per processor (projections and sagas share one namespace of names): its checkpoint,
-- the position of the last event whose effects it committed.
CREATE TABLE cqrs_processors (
    name        TEXT    PRIMARY KEY,
    position    INTEGER NOT NULL CHECK (position >= 0),
    -- Microseconds since the Unix epoch.
    updated_at  INTEGER NOT NULL
) STRICT;

-- The events (and saga deadlines) a processor parked under its failure policy, recorded in the
-- transaction that moved its checkpoint past them, until they are retried or discarded.
CREATE TABLE cqrs_dead_letters (
    processor   TEXT    NOT NULL,
    -- The event's position in decimal, or `deadline/{instance}/{deadline id}`.
    id          TEXT    NOT NULL,
    -- The parked event's position; NULL for a deadline.
    position    INTEGER CHECK (position >= 0),
    -- The serde JSON of `cqrs_core::processor::DeadLetter`, as written.
    record      TEXT    NOT NULL,
    -- Microseconds since the Unix epoch.
    parked_at   INTEGER NOT NULL,
    PRIMARY KEY (processor, id)
) STRICT;

-- One row per saga instance: its state and deadlines as JSON text, as the saga wrote them.
CREATE TABLE cqrs_saga_instances (
    saga        TEXT    NOT NULL,
    instance    TEXT    NOT NULL,
    state       TEXT    NOT NULL,
    -- The last event the instance handled.
    position    INTEGER NOT NULL CHECK (position >= 0),
    finished    INTEGER NOT NULL CHECK (finished IN (0, 1)),
    deadlines   TEXT    NOT NULL,
    -- The earliest deadline of an unfinished instance in microseconds since the Unix epoch,
    -- rounded down, NULL when it waits for none: what due and next deadlines are searched by.
    next_due    INTEGER,
    PRIMARY KEY (saga, instance)
) STRICT;

CREATE INDEX cqrs_saga_instances_due ON cqrs_saga_instances (saga, next_due)
    WHERE next_due IS NOT NULL;

-- The migrations of read models kept in this file (a `SqliteProjection`'s tables), applied by
-- `SqliteStore::migrate_read_model`, each once per owner, with the SHA-256 of its SQL.
CREATE TABLE cqrs_read_model_migrations (
    owner       TEXT    NOT NULL,
    version     INTEGER NOT NULL,
    name        TEXT    NOT NULL,
    checksum    TEXT    NOT NULL,
    -- Microseconds since the Unix epoch.
    applied_at  INTEGER NOT NULL,
    PRIMARY KEY (owner, version)
) STRICT;
