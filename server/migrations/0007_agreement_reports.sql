-- Federated evaluation: one randomized-response bit per client per version, "the version's global
-- head ranked the user's A-or-B choice first" (randomized on the device). /v1/stats de-biases it.
CREATE TABLE agreement_reports (
    model_version BIGINT NOT NULL,
    client_id TEXT NOT NULL,
    bit BIGINT NOT NULL,
    received_at BIGINT NOT NULL,
    PRIMARY KEY (model_version, client_id)
);
