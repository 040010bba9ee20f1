-- One batch of appends on distinct streams in one statement: what a store sends for every batch
-- that append_one.sql does not cover (a lone append is a batch of one). Parameters: per append
-- $1 stream, $2 expected kind (0 any, 1 no stream, 2 stream exists, 3 exact), $3 expected
-- version, $4 command id, $5 number of events; per event, every append's events one after the
-- other: $6 event id ... $14 headers.
-- One row per append, in order: outcome (0 written, 1 version conflict, 2 command already
-- applied, 4 another writer holds a turn on the stream: nothing written, the caller waits for the
-- turn and sends the append again), actual version, first and last version, first and last
-- position (NULL when the events were written unnumbered: the caller settles them after the
-- commit). Each append tries its stream's turn lock in shared mode first (see 0004_turns.sql).
--
-- The same steps as cqrs_append_batch_with_turns, without PL/pgSQL: command record and stream version read,
-- expectation checked, then, when something is written and nothing committed is waiting for a
-- number, the sequencer lock tried and the events numbered after the head. One statement has one
-- snapshot, taken before the lock: should another holder have committed numbers in between, the
-- head read here is behind and the first number written is taken by a committed row, so the
-- insert fails on cqrs_events_position (positions are numbered densely, only under the lock)
-- and nothing is written. Every unique violation (that one, or another writer's version or
-- command id) fails the whole statement; the caller then sends the batch through
-- cqrs_append_batch_with_turns, which reads with a fresh snapshot after the lock and isolates the append
-- that met it.
WITH appends AS MATERIALIZED (
    SELECT a.k, a.stream, a.kind, a.expected, a.command_id, a.count,
           pg_try_advisory_xact_lock_shared(1668444787, hashtext(a.stream)) AS free,
           coalesce(v.version, 0) AS actual,
           c.first_version AS earlier_first, c.version AS earlier_last,
           sum(a.count) OVER (ORDER BY a.k) - a.count AS event_offset
      FROM unnest($1::text[], $2::smallint[], $3::bigint[], $4::text[], $5::integer[])
           WITH ORDINALITY AS a(stream, kind, expected, command_id, count, k)
      LEFT JOIN cqrs_commands c ON c.stream = a.stream AND c.command_id = a.command_id
      CROSS JOIN LATERAL (SELECT max(e.version) AS version
                            FROM cqrs_events e WHERE e.stream = a.stream) v
), checked AS MATERIALIZED (
    SELECT a.*,
           CASE WHEN a.earlier_first IS NOT NULL THEN 2
                WHEN NOT a.free THEN 4
                WHEN a.kind = 0 OR (a.kind = 1 AND a.actual = 0) OR (a.kind = 2 AND a.actual > 0)
                     OR (a.kind = 3 AND a.actual = a.expected) THEN 0
                ELSE 1 END AS outcome
      FROM appends a
), decided AS MATERIALIZED (
    SELECT c.*,
           sum(CASE WHEN c.outcome = 0 THEN c.count ELSE 0 END) OVER (ORDER BY c.k)
             - CASE WHEN c.outcome = 0 THEN c.count ELSE 0 END AS position_offset,
           CASE WHEN c.outcome = 0 AND c.count > 0 THEN nextval('cqrs_append_ids') END AS append_id
      FROM checked c
), sequencer AS MATERIALIZED (
    SELECT CASE WHEN w.events > 0 THEN
             CASE WHEN NOT EXISTS (SELECT 1 FROM cqrs_events e WHERE e.position IS NULL) THEN
               CASE WHEN pg_try_advisory_xact_lock(7305271043612851201) THEN
                 (SELECT coalesce(max(e.position), 0) FROM cqrs_events e
                   WHERE e.position IS NOT NULL)
               END
             END
           END AS head,
           w.events
      FROM (SELECT coalesce(sum(d.count) FILTER (WHERE d.outcome = 0), 0) AS events
              FROM decided d) w
), written AS (
    INSERT INTO cqrs_events (stream, version, position, append_id, event_id, event_type,
                             schema_version, payload, correlation_id, causation_id, command_id,
                             occurred_at, headers)
    SELECT d.stream, d.actual + (ev.n - d.event_offset),
           s.head + d.position_offset + (ev.n - d.event_offset), d.append_id, ev.event_id,
           ev.event_type, ev.schema_version, ev.payload, ev.correlation_id, ev.causation_id,
           ev.command_id, ev.occurred_at, ev.headers::json
      FROM decided d
      CROSS JOIN sequencer s
      JOIN unnest($6::uuid[], $7::text[], $8::bigint[], $9::bytea[], $10::uuid[], $11::uuid[],
                  $12::text[], $13::timestamptz[], $14::text[])
           WITH ORDINALITY AS ev(event_id, event_type, schema_version, payload, correlation_id,
                                 causation_id, command_id, occurred_at, headers, n)
        ON ev.n > d.event_offset AND ev.n <= d.event_offset + d.count
     WHERE d.outcome = 0
), recorded AS (
    INSERT INTO cqrs_commands (stream, command_id, first_version, version)
    SELECT d.stream, d.command_id, d.actual + 1, d.actual + d.count
      FROM decided d
     WHERE d.outcome = 0 AND d.count > 0 AND d.command_id IS NOT NULL
), notified AS (
    SELECT pg_notify('cqrs_events', (s.head + s.events)::text)
      FROM sequencer s WHERE s.head IS NOT NULL
)
SELECT d.outcome::smallint,
       CASE WHEN d.outcome IN (0, 1) THEN d.actual END,
       CASE d.outcome WHEN 0 THEN d.actual + 1 WHEN 2 THEN d.earlier_first END,
       CASE d.outcome WHEN 0 THEN d.actual + d.count WHEN 2 THEN d.earlier_last END,
       CASE WHEN d.outcome = 0 AND d.count > 0 THEN s.head + d.position_offset + 1 END,
       CASE WHEN d.outcome = 0 AND d.count > 0 THEN s.head + d.position_offset + d.count END
  FROM decided d
 CROSS JOIN sequencer s
 CROSS JOIN (SELECT count(*) FROM notified) n
 ORDER BY d.k
