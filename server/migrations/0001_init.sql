-- feedloop server schema. Portable SQL: the same file runs on SQLite and PostgreSQL (through
-- sqlx's Any driver). Rules: BIGINT for integers, booleans and timestamps (unix milliseconds);
-- DOUBLE PRECISION for floats; TEXT for strings, JSON and base64-encoded binary; no
-- auto-increment (ids are assigned by the server).

CREATE TABLE settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE clients (
    client_id TEXT PRIMARY KEY,
    deployment TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE model_versions (
    version BIGINT PRIMARY KEY,
    parent_version BIGINT,
    round_id BIGINT,
    head TEXT NOT NULL,
    onnx_sha256 TEXT NOT NULL,
    optimizer TEXT NOT NULL,
    cohort_size BIGINT NOT NULL,
    clip_norm DOUBLE PRECISION,
    granularity DOUBLE PRECISION,
    noise_stddev DOUBLE PRECISION,
    rho DOUBLE PRECISION,
    epsilon DOUBLE PRECISION,
    delta DOUBLE PRECISION,
    created_at BIGINT NOT NULL,
    flagged BIGINT NOT NULL DEFAULT 0,
    flag_reason TEXT,
    flagged_at BIGINT
);

CREATE TABLE rounds (
    round_id BIGINT PRIMARY KEY,
    model_version BIGINT NOT NULL,
    dimension BIGINT NOT NULL,
    clip_norm DOUBLE PRECISION NOT NULL,
    granularity DOUBLE PRECISION NOT NULL,
    noise_stddev DOUBLE PRECISION NOT NULL,
    min_cohort BIGINT NOT NULL,
    target_count BIGINT,
    deadline BIGINT,
    status TEXT NOT NULL,
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

CREATE INDEX rounds_status ON rounds (status);

CREATE TABLE updates (
    round_id BIGINT NOT NULL,
    client_id TEXT NOT NULL,
    payload TEXT NOT NULL,
    payload_sha256 TEXT NOT NULL,
    received_at BIGINT NOT NULL,
    PRIMARY KEY (round_id, client_id)
);

CREATE UNIQUE INDEX updates_payload ON updates (round_id, payload_sha256);

CREATE TABLE rr_reports (
    model_version BIGINT NOT NULL,
    client_id TEXT NOT NULL,
    bit BIGINT NOT NULL,
    received_at BIGINT NOT NULL,
    PRIMARY KEY (model_version, client_id)
);

CREATE TABLE optimizer_state (
    deployment TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE audit_log (
    id TEXT PRIMARY KEY,
    at BIGINT NOT NULL,
    admin_fingerprint TEXT NOT NULL,
    action TEXT NOT NULL,
    details TEXT NOT NULL
);

CREATE INDEX audit_log_at ON audit_log (at);
