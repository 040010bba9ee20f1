-- A lone append of one event at an exact expected version ($2; 0 for a stream that must not
-- exist yet) without a command id: what a repository sends for most commands. Parameters: $1
-- stream, $2 expected version, then the event's columns: $3 event id, $4 type, $5 schema
-- version, $6 payload, $7 correlation id, $8 causation id, $9 command id, $10 occurred at, $11
-- headers. Returns the event's version and position (NULL when written unnumbered: the caller
-- settles it after the commit); no row when the expected version is not the stream's (version
-- $2 does not exist). Should version $2 + 1 exist, the insert fails on the primary key.
--
-- The steps of append.sql for this case, as one plain insert: no command record to read or
-- write, and the expected version checked by the primary key and the existence of version $2
-- instead of a read of the stream's version. The event is numbered after the head when nothing
-- committed is waiting for a number and the sequencer lock is free; otherwise it is written
-- unnumbered, with an append id drawn here. As in append.sql, a head read with a snapshot that
-- another holder overtook makes the insert fail on cqrs_events_position. No row either when
-- another writer holds a turn on the stream (its turn lock is not free in shared mode): the
-- caller's fallback, cqrs_append_batch_with_turns, then says so.
WITH head AS MATERIALIZED (
    SELECT CASE WHEN NOT EXISTS (SELECT 1 FROM cqrs_events e WHERE e.position IS NULL) THEN
             CASE WHEN pg_try_advisory_xact_lock(7305271043612851201) THEN
               (SELECT coalesce(max(e.position), 0) FROM cqrs_events e
                 WHERE e.position IS NOT NULL)
             END
           END AS position,
           pg_try_advisory_xact_lock_shared(1668444787, hashtext($1::text)) AS free
)
INSERT INTO cqrs_events (stream, version, position, append_id, event_id, event_type,
                         schema_version, payload, correlation_id, causation_id, command_id,
                         occurred_at, headers)
SELECT $1::text, $2::bigint + 1, head.position + 1,
       -- Only unnumbered events need an append id (see cqrs_sequence).
       CASE WHEN head.position IS NULL THEN nextval('cqrs_append_ids') ELSE 0 END,
       $3::uuid, $4::text, $5::bigint, $6::bytea, $7::uuid, $8::uuid, $9::text,
       $10::timestamptz, $11::text::json
  FROM head
 WHERE head.free
   AND ($2::bigint = 0
    OR EXISTS (SELECT 1 FROM cqrs_events e WHERE e.stream = $1::text AND e.version = $2::bigint))
RETURNING version, position,
          -- Wakes waiting readers when the event was numbered.
          CASE WHEN position IS NOT NULL THEN pg_notify('cqrs_events', position::text) END
