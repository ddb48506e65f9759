-- A round's status is one of feedloop_core::protocol::RoundStatus, and at most one round is open
-- (so two server processes on one database cannot open twin rounds). SQLite cannot add a CHECK
-- constraint to an existing table, so the table is rebuilt (portable SQL: same file on PostgreSQL).

CREATE TABLE rounds_v2 (
    round_id BIGINT PRIMARY KEY,
    model_version BIGINT NOT NULL,
    dimension BIGINT NOT NULL,
    clip_norm DOUBLE PRECISION NOT NULL,
    granularity DOUBLE PRECISION NOT NULL,
    noise_stddev DOUBLE PRECISION NOT NULL,
    min_cohort BIGINT NOT NULL,
    target_count BIGINT,
    deadline BIGINT,
    status TEXT NOT NULL
        CHECK (status IN ('open', 'closing', 'published', 'insufficient', 'aborted')),
    received BIGINT NOT NULL DEFAULT 0,
    rho DOUBLE PRECISION NOT NULL,
    epsilon DOUBLE PRECISION NOT NULL,
    delta DOUBLE PRECISION NOT NULL,
    created_at BIGINT NOT NULL,
    closed_at BIGINT,
    close_reason TEXT,
    cohort_size BIGINT,
    published_version BIGINT
);

INSERT INTO rounds_v2 (round_id, model_version, dimension, clip_norm, granularity, noise_stddev,
    min_cohort, target_count, deadline, status, received, rho, epsilon, delta, created_at,
    closed_at, close_reason, cohort_size, published_version)
SELECT round_id, model_version, dimension, clip_norm, granularity, noise_stddev,
    min_cohort, target_count, deadline, status, received, rho, epsilon, delta, created_at,
    closed_at, close_reason, cohort_size, published_version
FROM rounds;

DROP TABLE rounds;

ALTER TABLE rounds_v2 RENAME TO rounds;

CREATE INDEX rounds_status ON rounds (status);

CREATE UNIQUE INDEX rounds_one_open ON rounds (status) WHERE status = 'open';
