-- Secure metric reports (`feedloop serve --secure-metrics`): thumbs, agreement and star reports
-- sealed to the leader and the helper (Prio3Histogram), released in disjoint noisy batches.

-- On the leader: one task per metric and version (`thumbs@3`), with its Prio3 verification key;
-- its output share of each verified report (uniformly random on its own), the batch it was
-- released in, and each batch's noisy counts (JSON array, one per bucket).
CREATE TABLE metric_tasks (
    task TEXT PRIMARY KEY,
    model_version BIGINT NOT NULL,
    metric TEXT NOT NULL,
    buckets BIGINT NOT NULL,
    noise_stddev DOUBLE PRECISION NOT NULL,
    min_reports BIGINT NOT NULL,
    verify_key TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE sealed_reports (
    task TEXT NOT NULL,
    report_id TEXT NOT NULL,
    client_id TEXT NOT NULL,
    output_share TEXT NOT NULL,
    batch BIGINT,
    received_at BIGINT NOT NULL,
    PRIMARY KEY (task, report_id)
);

CREATE UNIQUE INDEX sealed_reports_client ON sealed_reports (task, client_id);

CREATE TABLE sealed_batches (
    task TEXT NOT NULL,
    batch BIGINT NOT NULL,
    reports BIGINT NOT NULL,
    noisy_counts TEXT NOT NULL,
    noise_stddev DOUBLE PRECISION NOT NULL,
    released_at BIGINT NOT NULL,
    PRIMARY KEY (task, batch)
);

-- On a helper: the metric tasks its leader opened, its output share of each report with the
-- batch (digest of its sorted report ids) it was released in, and each release's noisy share,
-- kept so a leader that lost the answer gets the same bytes again (the noise is drawn once).
CREATE TABLE helper_metric_tasks (
    task TEXT PRIMARY KEY,
    buckets BIGINT NOT NULL,
    noise_stddev DOUBLE PRECISION NOT NULL,
    min_reports BIGINT NOT NULL,
    verify_key TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE helper_metric_reports (
    task TEXT NOT NULL,
    report_id TEXT NOT NULL,
    client_id TEXT NOT NULL,
    request_sha256 TEXT NOT NULL,
    response TEXT NOT NULL,
    output_share TEXT NOT NULL,
    batch_sha256 TEXT,
    received_at BIGINT NOT NULL,
    PRIMARY KEY (task, report_id)
);

CREATE UNIQUE INDEX helper_metric_reports_client ON helper_metric_reports (task, client_id);

CREATE TABLE helper_metric_batches (
    task TEXT NOT NULL,
    ids_sha256 TEXT NOT NULL,
    reports BIGINT NOT NULL,
    share TEXT NOT NULL,
    released_at BIGINT NOT NULL,
    PRIMARY KEY (task, ids_sha256)
);
