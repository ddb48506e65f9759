-- Star ratings (CSAT) per version: one 5-ary randomized-response report per client per version,
-- randomized on the device (`stars` is 1 to 5 as reported). /v1/stats de-biases the histogram.
CREATE TABLE star_reports (
    model_version BIGINT NOT NULL,
    client_id TEXT NOT NULL,
    stars BIGINT NOT NULL,
    received_at BIGINT NOT NULL,
    PRIMARY KEY (model_version, client_id)
);
