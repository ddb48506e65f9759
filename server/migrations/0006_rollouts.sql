-- Staged rollouts: a published version served to a canary fraction of devices until the
-- sequential test (feedloop_core::rollout) rolls it back or it is promoted to current.
-- At most one rollout is running (status canary or awaiting_approval) at a time.
CREATE TABLE rollouts (
    version BIGINT PRIMARY KEY,
    control_version BIGINT NOT NULL,
    fraction DOUBLE PRECISION NOT NULL,
    status TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    decided_at BIGINT,
    decided_by TEXT,
    reason TEXT,
    -- JSON RolloutEvidence at the decision.
    evidence TEXT
);
