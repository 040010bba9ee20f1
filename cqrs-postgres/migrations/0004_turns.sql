-- Appends that cannot deadlock, and turns on hot streams. See the crate documentation
-- (`cqrs_postgres`, sections "No deadlocks" and "Turns on hot streams").
--
-- cqrs_append_batch_with_turns is cqrs_append_batch of 0003 with two changes:
--
-- * It numbers its own events only when no committed event waits for a number; it never numbers
--   other appends' pending events (an UPDATE of their rows) in a transaction that then inserts:
--   that order of locks let a batch and a stale writer of another node wait for each other.
--   Pending events are numbered by cqrs_settle and cqrs_sequence_pending alone, which insert
--   nothing.
-- * With p_turns, each append first checks the stream's turn (cqrs_turn_free): when another
--   writer holds or waits for it, the append writes nothing and its outcome is 4: the caller
--   waits for the turn to end and sends it again.
--
-- cqrs_append_batch keeps its signature and its answers for nodes still running the previous
-- version during a rollout: it is the new function without turns (those nodes do not know
-- outcome 4), so they get the deadlock fix and simply do not respect turns.

-- Whether an append to p_stream may go ahead: the caller's own transaction holds the turn on
-- it (the turn marks itself with the transaction-local setting cqrs.turn), or no turn holds it
-- or waits for it (a shared try fails while an exclusive request waits: turns are served in
-- order). The turn's own check must not try the shared lock: with other turns waiting it would
-- fail even though this transaction holds the exclusive one.
CREATE FUNCTION cqrs_turn_free(p_stream text) RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    IF current_setting('cqrs.turn', true) = p_stream THEN
        RETURN true;
    END IF;
    RETURN pg_try_advisory_xact_lock_shared(1668444787, hashtext(p_stream));
END
$$;

CREATE FUNCTION cqrs_append_batch_with_turns(
    p_streams text[], p_expected_kinds smallint[], p_expected bigint[], p_command_ids text[],
    p_counts integer[],
    p_event_ids uuid[], p_event_types text[], p_schema_versions bigint[], p_payloads bytea[],
    p_correlation_ids uuid[], p_causation_ids uuid[], p_event_command_ids text[],
    p_occurred_at timestamptz[], p_headers text[], p_turns boolean)
RETURNS TABLE (outcome smallint, actual_version bigint, first_version bigint,
               last_version bigint, first_position bigint, last_position bigint)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    appends integer := coalesce(cardinality(p_streams), 0);
    outcomes smallint[] := '{}';
    actuals bigint[] := '{}';
    firsts bigint[] := '{}';
    lasts bigint[] := '{}';
    first_positions bigint[] := '{}';
    last_positions bigint[] := '{}';
    offsets integer[] := '{}';
    writes boolean := false;
    inserted boolean := false;
    found_firsts bigint[];
    found_lasts bigint[];
    -- Per event, filled in for the appends that write (the stream stays NULL for the others);
    -- sized up front so that unnest lines them up with the event columns.
    events integer := coalesce(cardinality(p_event_ids), 0);
    event_streams text[] := array_fill(NULL::text, ARRAY[events]);
    event_versions bigint[] := array_fill(NULL::bigint, ARRAY[events]);
    event_positions bigint[] := array_fill(NULL::bigint, ARRAY[events]);
    event_appends bigint[] := array_fill(NULL::bigint, ARRAY[events]);
    position_after bigint;
    k integer;
    event_offset integer := 0;
    event_count integer;
    actual bigint;
    head bigint;
    next_position bigint;
    append_number bigint;
BEGIN
    -- 1. Each append's command record and stream version, read in one statement (one snapshot),
    -- then its expected version checked, as in cqrs_append.
    SELECT array_agg(c.first_version ORDER BY a.k), array_agg(c.version ORDER BY a.k),
           array_agg(v.actual ORDER BY a.k)
      INTO found_firsts, found_lasts, actuals
      FROM unnest(p_streams, p_command_ids) WITH ORDINALITY AS a(stream, command_id, k)
      LEFT JOIN cqrs_commands c ON c.stream = a.stream AND c.command_id = a.command_id
      CROSS JOIN LATERAL (SELECT coalesce(max(e.version), 0) AS actual
                            FROM cqrs_events e WHERE e.stream = a.stream) v;
    FOR k IN 1 .. appends LOOP
        offsets[k] := event_offset;
        event_count := p_counts[k];
        event_offset := event_offset + event_count;
        first_positions[k] := NULL;
        last_positions[k] := NULL;
        actual := actuals[k];
        IF found_firsts[k] IS NOT NULL THEN
            outcomes[k] := 2;
            firsts[k] := found_firsts[k];
            lasts[k] := found_lasts[k];
            actuals[k] := NULL;
        -- CASE, not AND: without turns the check must not run at all (in parentheses, so that
        -- PL/pgSQL does not take the CASE's THEN for the ELSIF's).
        ELSIF (CASE WHEN p_turns THEN NOT cqrs_turn_free(p_streams[k]) ELSE false END) THEN
            -- Another writer holds a turn on the stream: nothing written, the caller waits for
            -- the turn to end and sends the append again.
            outcomes[k] := 4;
            firsts[k] := NULL;
            lasts[k] := NULL;
        ELSIF NOT (p_expected_kinds[k] = 0
                   OR (p_expected_kinds[k] = 1 AND actual = 0)
                   OR (p_expected_kinds[k] = 2 AND actual > 0)
                   OR (p_expected_kinds[k] = 3 AND actual = p_expected[k])) THEN
            outcomes[k] := 1;
            firsts[k] := NULL;
            lasts[k] := NULL;
        ELSE
            outcomes[k] := 0;
            firsts[k] := actual + 1;
            lasts[k] := actual + event_count;
            IF event_count > 0 THEN
                writes := true;
            END IF;
        END IF;
    END LOOP;

    -- 2. Only try the lock, after every version was read, and number this batch's events only
    -- when no committed event waits for a number. Numbering pending events here would update
    -- other appends' rows before inserting this batch's, and a writer inserting a stale version
    -- of such a row waits for this transaction while this one may wait for that writer's earlier
    -- insert: a deadlock. Holding the lock without numbering is harmless: the events go in
    -- unnumbered and the caller settles them after the commit.
    IF writes AND NOT EXISTS (SELECT 1 FROM cqrs_events e WHERE e.position IS NULL)
       AND pg_try_advisory_xact_lock(7305271043612851201) THEN
        -- A fresh snapshot, taken after the lock: every number an earlier holder committed.
        IF NOT EXISTS (SELECT 1 FROM cqrs_events e WHERE e.position IS NULL) THEN
            SELECT coalesce(max(e.position), 0) INTO head
              FROM cqrs_events e WHERE e.position IS NOT NULL;
            next_position := head;
        END IF;
    END IF;

    -- 3. The inserts: every append at once, in one subtransaction. Each append draws its id now,
    -- after its version was read.
    IF writes THEN
        position_after := next_position;
        FOR k IN 1 .. appends LOOP
            CONTINUE WHEN outcomes[k] <> 0 OR p_counts[k] = 0;
            append_number := nextval('cqrs_append_ids');
            FOR i IN 1 .. p_counts[k] LOOP
                event_streams[offsets[k] + i] := p_streams[k];
                event_versions[offsets[k] + i] := actuals[k] + i;
                event_positions[offsets[k] + i] := position_after + i;
                event_appends[offsets[k] + i] := append_number;
            END LOOP;
            IF position_after IS NOT NULL THEN
                first_positions[k] := position_after + 1;
                last_positions[k] := position_after + p_counts[k];
                position_after := position_after + p_counts[k];
            END IF;
        END LOOP;
        BEGIN
            INSERT INTO cqrs_events (stream, version, position, append_id, event_id, event_type,
                                     schema_version, payload, correlation_id, causation_id,
                                     command_id, occurred_at, headers)
            SELECT ev.stream, ev.version, ev.position, ev.append_id, ev.event_id, ev.event_type,
                   ev.schema_version, ev.payload, ev.correlation_id, ev.causation_id,
                   ev.command_id, ev.occurred_at, ev.headers::json
              FROM unnest(event_streams, event_versions, event_positions, event_appends,
                          p_event_ids, p_event_types, p_schema_versions, p_payloads,
                          p_correlation_ids, p_causation_ids, p_event_command_ids,
                          p_occurred_at, p_headers)
                   AS ev(stream, version, position, append_id, event_id, event_type,
                         schema_version, payload, correlation_id, causation_id, command_id,
                         occurred_at, headers)
             WHERE ev.stream IS NOT NULL;
            INSERT INTO cqrs_commands (stream, command_id, first_version, version)
            SELECT a.stream, a.command_id, a.first_version, a.last_version
              FROM unnest(p_streams, p_command_ids, outcomes, p_counts, firsts, lasts)
                   AS a(stream, command_id, outcome, event_count, first_version, last_version)
             WHERE a.outcome = 0 AND a.event_count > 0 AND a.command_id IS NOT NULL;
            next_position := position_after;
            inserted := true;
        EXCEPTION WHEN unique_violation THEN
            -- Another transaction wrote one of these versions or command ids first: each append
            -- again on its own, below.
            first_positions := '{}';
            last_positions := '{}';
        END;
    END IF;

    -- Only after a unique violation: each append in a subtransaction of its own, so that the
    -- one that met it writes nothing and the others are written.
    FOR k IN 1 .. appends LOOP
        EXIT WHEN inserted;
        event_count := p_counts[k];
        CONTINUE WHEN outcomes[k] <> 0 OR event_count = 0;
        append_number := nextval('cqrs_append_ids');
        BEGIN
            INSERT INTO cqrs_events (stream, version, position, append_id, event_id, event_type,
                                     schema_version, payload, correlation_id, causation_id,
                                     command_id, occurred_at, headers)
            SELECT p_streams[k], actuals[k] + i, next_position + i, append_number,
                   p_event_ids[offsets[k] + i], p_event_types[offsets[k] + i],
                   p_schema_versions[offsets[k] + i], p_payloads[offsets[k] + i],
                   p_correlation_ids[offsets[k] + i], p_causation_ids[offsets[k] + i],
                   p_event_command_ids[offsets[k] + i], p_occurred_at[offsets[k] + i],
                   p_headers[offsets[k] + i]::json
              FROM generate_series(1, event_count) AS i;
            IF p_command_ids[k] IS NOT NULL THEN
                INSERT INTO cqrs_commands (stream, command_id, first_version, version)
                VALUES (p_streams[k], p_command_ids[k], firsts[k], lasts[k]);
            END IF;
            -- Last in the block: variables are not rolled back with the subtransaction.
            IF next_position IS NOT NULL THEN
                first_positions[k] := next_position + 1;
                last_positions[k] := next_position + event_count;
                next_position := next_position + event_count;
            END IF;
        EXCEPTION WHEN unique_violation THEN
            outcomes[k] := 3;
        END;
    END LOOP;

    -- The holder numbered something (its own events, or pending ones) unless everything failed
    -- and nothing was pending; a notification too many costs a waiting reader one head query.
    IF next_position IS NOT NULL AND next_position > 0 THEN
        PERFORM pg_notify('cqrs_events', next_position::text);
    END IF;

    RETURN QUERY
        SELECT outcomes[g.n], actuals[g.n], firsts[g.n], lasts[g.n], first_positions[g.n],
               last_positions[g.n]
          FROM generate_series(1, appends) AS g(n)
         ORDER BY g.n;
END
$$;

CREATE OR REPLACE FUNCTION cqrs_append_batch(
    p_streams text[], p_expected_kinds smallint[], p_expected bigint[], p_command_ids text[],
    p_counts integer[],
    p_event_ids uuid[], p_event_types text[], p_schema_versions bigint[], p_payloads bytea[],
    p_correlation_ids uuid[], p_causation_ids uuid[], p_event_command_ids text[],
    p_occurred_at timestamptz[], p_headers text[])
RETURNS TABLE (outcome smallint, actual_version bigint, first_version bigint,
               last_version bigint, first_position bigint, last_position bigint)
LANGUAGE sql VOLATILE AS $$
    SELECT * FROM cqrs_append_batch_with_turns(p_streams, p_expected_kinds, p_expected,
        p_command_ids, p_counts, p_event_ids, p_event_types, p_schema_versions, p_payloads,
        p_correlation_ids, p_causation_ids, p_event_command_ids, p_occurred_at, p_headers, false)
$$;
