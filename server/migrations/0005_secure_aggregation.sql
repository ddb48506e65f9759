-- Secure aggregation with two aggregators (feedloop-secagg). On the leader: a round says how it
-- aggregates, and a secure round keeps its helper's terms and the round's Prio3 verification key
-- (JSON, `service::secure::SecureTerms`); its `updates` rows hold the leader's output share of
-- each verified report (uniformly random on its own) and the report's digest.
ALTER TABLE rounds ADD COLUMN aggregation TEXT NOT NULL DEFAULT 'local';
ALTER TABLE rounds ADD COLUMN secure_terms TEXT;

-- On a helper: the rounds (tasks) its leader opened there, with the terms the helper applies, and
-- the one release of each batch (kept, so a leader that lost the answer gets the same noisy share
-- again: the noise is drawn once).
CREATE TABLE helper_tasks (
    round_id BIGINT PRIMARY KEY,
    dimension BIGINT NOT NULL,
    clip_norm DOUBLE PRECISION NOT NULL,
    granularity DOUBLE PRECISION NOT NULL,
    noise_stddev DOUBLE PRECISION NOT NULL,
    min_reports BIGINT NOT NULL,
    verify_key TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    released_ids_sha256 TEXT,
    released_share TEXT,
    released_at BIGINT
);

-- The helper's output share of each report it verified, one per report id and one per client,
-- and its answer (replayed when the leader retries the same request).
CREATE TABLE helper_reports (
    round_id BIGINT NOT NULL,
    report_id TEXT NOT NULL,
    client_id TEXT NOT NULL,
    request_sha256 TEXT NOT NULL,
    response TEXT NOT NULL,
    output_share TEXT NOT NULL,
    received_at BIGINT NOT NULL,
    PRIMARY KEY (round_id, report_id)
);

CREATE UNIQUE INDEX helper_reports_client ON helper_reports (round_id, client_id);
