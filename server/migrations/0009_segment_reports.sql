-- The thumbs-up rate per declared segment: one report per client per version, the pair
-- (segment, thumbs verdict) as one cell randomized on the device with (2 x segments)-ary
-- randomized response. `segments` is how many segments the device randomized over: /v1/stats
-- de-biases the reports made over the list the server declares now and leaves others out.
CREATE TABLE segment_reports (
    model_version BIGINT NOT NULL,
    client_id TEXT NOT NULL,
    segments BIGINT NOT NULL,
    cell BIGINT NOT NULL,
    received_at BIGINT NOT NULL,
    PRIMARY KEY (model_version, client_id)
);
