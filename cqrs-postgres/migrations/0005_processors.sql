-- Processors: projections and sagas are run by cqrs-core's one processor runner, and keep their
-- checkpoints, leader locks and dead letters in one place. See the module
-- `cqrs_postgres::processor`.

-- Projections and sagas now share one namespace of names: a saga's checkpoint moves into
-- `cqrs_projections`, next to its leader lock's `lock_id`. A saga and a projection of the same
-- name would share a checkpoint from now on, so that is refused rather than guessed at.
DO $$
DECLARE
    clash text;
BEGIN
    SELECT s.saga INTO clash
    FROM cqrs_saga_checkpoints s JOIN cqrs_projections p ON p.name = s.saga
    LIMIT 1;
    IF clash IS NOT NULL THEN
        RAISE EXCEPTION 'a saga and a projection are both named "%"', clash
            USING HINT = 'projections and sagas now share one namespace of names: rename one of '
                         'them (and its row in cqrs_projections or cqrs_saga_checkpoints), then '
                         'migrate again';
    END IF;
END
$$;

INSERT INTO cqrs_projections (name, position)
SELECT saga, position FROM cqrs_saga_checkpoints;

-- This version reads neither `cqrs_saga_checkpoints` nor `cqrs_saga_failures` any more (a
-- saga's failures are dead letters now); they stay for nodes of the previous version during a
-- rollout, as `cqrs_append` and `cqrs_append_batch` do.

-- The events (and saga deadlines) a processor parked under its failure policy, recorded in the
-- transaction that moved its checkpoint past them, until they are retried or discarded.
CREATE TABLE cqrs_dead_letters (
    processor   text        NOT NULL,
    -- The event's position in decimal, or `deadline/{instance}/{deadline id}`.
    id          text        NOT NULL,
    -- The parked event's position; NULL for a deadline.
    position    bigint      CHECK (position >= 0),
    -- The serde JSON of `cqrs_core::processor::DeadLetter`: the event, the error, the attempts.
    -- json, not jsonb: it comes back as written.
    record      json        NOT NULL,
    parked_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (processor, id)
);
