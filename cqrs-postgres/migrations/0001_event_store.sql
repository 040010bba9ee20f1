-- The event store: events, command-id records, snapshots, and the functions that append and
-- sequence. See the crate documentation (`cqrs_postgres`, section "The global order") for why the
-- sequencing is correct.

CREATE SEQUENCE cqrs_append_ids AS bigint;

CREATE TABLE cqrs_events (
    stream          text        NOT NULL,
    version         bigint      NOT NULL CHECK (version > 0),
    -- NULL from the append's commit until the sequencer numbers the row (see cqrs_sequence).
    position        bigint,
    -- One number per append, drawn after the stream's version was read: orders pending appends
    -- so that each stays contiguous and a stream's appends stay in version order.
    append_id       bigint      NOT NULL,
    event_id        uuid        NOT NULL,
    event_type      text        NOT NULL,
    schema_version  bigint      NOT NULL,
    -- bytea, not jsonb: the payload comes back byte for byte (jsonb reorders keys).
    payload         bytea       NOT NULL,
    correlation_id  uuid,
    causation_id    uuid,
    command_id      text,
    occurred_at     timestamptz NOT NULL,
    -- json (text kept as written), not jsonb.
    headers         json        NOT NULL,
    PRIMARY KEY (stream, version)
);

CREATE UNIQUE INDEX cqrs_events_position ON cqrs_events (position) WHERE position IS NOT NULL;
CREATE INDEX cqrs_events_pending ON cqrs_events (append_id, version) WHERE position IS NULL;

CREATE TABLE cqrs_commands (
    stream          text        NOT NULL,
    command_id      text        NOT NULL,
    first_version   bigint      NOT NULL,
    version         bigint      NOT NULL,
    PRIMARY KEY (stream, command_id)
);

CREATE TABLE cqrs_snapshots (
    stream          text        PRIMARY KEY,
    version         bigint      NOT NULL,
    schema_version  bigint      NOT NULL,
    payload         bytea       NOT NULL,
    saved_at        timestamptz NOT NULL DEFAULT now()
);

-- Numbers every committed, not yet numbered event after the current head, appends in the order
-- they drew their append_id. The caller holds the sequencer lock (transaction-scoped advisory
-- lock 7_305_271_043_612_851_201); each statement takes a fresh snapshot (READ COMMITTED,
-- volatile function), so it sees every number an earlier holder committed. Returns the new head.
CREATE FUNCTION cqrs_sequence() RETURNS bigint
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    head bigint;
    numbered bigint;
BEGIN
    SELECT coalesce(max(e.position), 0) INTO head FROM cqrs_events e WHERE e.position IS NOT NULL;
    -- Usually nothing is pending. EXISTS runs as a plain index scan, which marks the index
    -- entries of rows numbered earlier as dead, so this stays cheap between vacuums (a bitmap
    -- scan would visit every one of them again).
    IF NOT EXISTS (SELECT 1 FROM cqrs_events e WHERE e.position IS NULL) THEN
        RETURN head;
    END IF;
    WITH pending AS (
        SELECT e.stream, e.version, row_number() OVER (ORDER BY e.append_id, e.version) AS n
        FROM cqrs_events e
        WHERE e.position IS NULL
    )
    UPDATE cqrs_events e SET position = head + pending.n
    FROM pending
    WHERE e.stream = pending.stream AND e.version = pending.version;
    GET DIAGNOSTICS numbered = ROW_COUNT;
    RETURN head + numbered;
END
$$;

-- Makes sure the events of `stream` from `first` to `last` (committed) have positions, numbering
-- every pending event under the sequencer lock if they do not, and returns their first and last
-- positions.
CREATE FUNCTION cqrs_settle(p_stream text, p_first bigint, p_last bigint,
                            OUT first_position bigint, OUT last_position bigint)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    numbered bigint;
    head bigint;
BEGIN
    SELECT min(e.position), max(e.position), count(e.position)
      INTO first_position, last_position, numbered
      FROM cqrs_events e
     WHERE e.stream = p_stream AND e.version BETWEEN p_first AND p_last;
    IF numbered < p_last - p_first + 1 THEN
        PERFORM pg_advisory_xact_lock(7305271043612851201);
        head := cqrs_sequence();
        PERFORM pg_notify('cqrs_events', head::text);
        SELECT min(e.position), max(e.position)
          INTO first_position, last_position
          FROM cqrs_events e
         WHERE e.stream = p_stream AND e.version BETWEEN p_first AND p_last;
    END IF;
END
$$;

-- One append, in the caller's transaction. p_expected_kind: 0 any, 1 no stream, 2 stream exists,
-- 3 exact version p_expected. outcome: 0 written (or nothing to write), 1 version conflict
-- (actual_version says the stream's version), 2 the command id was already applied to the stream
-- (first_version and last_version are the earlier append's). Positions are NULL when another
-- transaction held the sequencer lock: the caller then calls cqrs_settle after the commit.
CREATE FUNCTION cqrs_append(
    p_stream text, p_expected_kind smallint, p_expected bigint, p_command_id text,
    p_event_ids uuid[], p_event_types text[], p_schema_versions bigint[], p_payloads bytea[],
    p_correlation_ids uuid[], p_causation_ids uuid[], p_command_ids text[],
    p_occurred_at timestamptz[], p_headers text[],
    OUT outcome smallint, OUT actual_version bigint, OUT first_version bigint,
    OUT last_version bigint, OUT first_position bigint, OUT last_position bigint)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    event_count bigint := coalesce(cardinality(p_event_ids), 0);
    append_number bigint;
    head bigint;
BEGIN
    IF p_command_id IS NOT NULL THEN
        SELECT c.first_version, c.version INTO first_version, last_version
          FROM cqrs_commands c
         WHERE c.stream = p_stream AND c.command_id = p_command_id;
        IF FOUND THEN
            outcome := 2;
            RETURN;
        END IF;
    END IF;

    SELECT coalesce(max(e.version), 0) INTO actual_version
      FROM cqrs_events e WHERE e.stream = p_stream;
    IF NOT (p_expected_kind = 0
            OR (p_expected_kind = 1 AND actual_version = 0)
            OR (p_expected_kind = 2 AND actual_version > 0)
            OR (p_expected_kind = 3 AND actual_version = p_expected)) THEN
        outcome := 1;
        RETURN;
    END IF;

    outcome := 0;
    first_version := actual_version + 1;
    last_version := actual_version + event_count;
    IF event_count = 0 THEN
        RETURN;
    END IF;

    append_number := nextval('cqrs_append_ids');
    -- Only try: a writer never waits here. The holder numbers its own events inside its
    -- transaction (after every pending committed one), the others commit unnumbered.
    IF pg_try_advisory_xact_lock(7305271043612851201) THEN
        head := cqrs_sequence();
        first_position := head + 1;
        last_position := head + event_count;
    END IF;

    INSERT INTO cqrs_events (stream, version, position, append_id, event_id, event_type,
                             schema_version, payload, correlation_id, causation_id, command_id,
                             occurred_at, headers)
    SELECT p_stream, actual_version + i, head + i, append_number, p_event_ids[i],
           p_event_types[i], p_schema_versions[i], p_payloads[i], p_correlation_ids[i],
           p_causation_ids[i], p_command_ids[i], p_occurred_at[i], p_headers[i]::json
      FROM generate_series(1, event_count) AS i;

    IF p_command_id IS NOT NULL THEN
        INSERT INTO cqrs_commands (stream, command_id, first_version, version)
        VALUES (p_stream, p_command_id, first_version, last_version);
    END IF;

    IF head IS NOT NULL THEN
        PERFORM pg_notify('cqrs_events', last_position::text);
    END IF;
END
$$;

-- Numbers pending events if there are any: the safety net for an appender that committed and
-- then lost its connection before it could call cqrs_settle. Returns the head.
CREATE FUNCTION cqrs_sequence_pending() RETURNS bigint
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    head bigint;
BEGIN
    IF EXISTS (SELECT 1 FROM cqrs_events e WHERE e.position IS NULL) THEN
        PERFORM pg_advisory_xact_lock(7305271043612851201);
        head := cqrs_sequence();
        PERFORM pg_notify('cqrs_events', head::text);
        RETURN head;
    END IF;
    SELECT coalesce(max(e.position), 0) INTO head FROM cqrs_events e WHERE e.position IS NOT NULL;
    RETURN head;
END
$$;
