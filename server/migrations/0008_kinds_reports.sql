-- Feedback volume: one report per client per version, a kind of feedback the device drew at random
-- and whether its user gave that kind (the bit randomized on the device). /v1/stats de-biases the
-- share of devices per kind, per version and per day the reports arrived.
CREATE TABLE kinds_reports (
    model_version BIGINT NOT NULL,
    client_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    bit BIGINT NOT NULL,
    received_at BIGINT NOT NULL,
    PRIMARY KEY (model_version, client_id)
);
CREATE INDEX kinds_reports_received_at ON kinds_reports (received_at);
