-- Batches, the files they ship, and the append-only audit trail of state transitions.
CREATE TABLE batches (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    name            TEXT    NOT NULL,
    source_path     TEXT    NOT NULL,
    -- sha256 over input.csv and each image's path and size: known before shipping.
    content_key     TEXT    NOT NULL,
    -- sha256 over input.csv and each image's path, size and sha256: known once shipped.
    fingerprint     TEXT,
    state           TEXT    NOT NULL CHECK (state IN ('discovered', 'validated', 'rejected', 'uploading', 'retry_wait', 'submitted', 'failed')),
    -- Chosen and committed before the remote folder is created; never changes afterwards.
    remote_uuid     TEXT    UNIQUE,
    remote_dir      TEXT,
    rows            INTEGER NOT NULL DEFAULT 0,
    files           INTEGER NOT NULL DEFAULT 0,
    bytes           INTEGER NOT NULL DEFAULT 0,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT,
    last_error      TEXT,
    created_at      TEXT    NOT NULL,
    updated_at      TEXT    NOT NULL,
    submitted_at    TEXT
);
CREATE INDEX batches_by_state ON batches (state);
CREATE INDEX batches_by_content ON batches (content_key);
CREATE INDEX batches_by_source ON batches (source_path);

CREATE TABLE files (
    batch_id INTEGER NOT NULL REFERENCES batches (id) ON DELETE CASCADE,
    path     TEXT    NOT NULL,
    size     INTEGER NOT NULL,
    sha256   TEXT,
    shipped  INTEGER NOT NULL DEFAULT 0 CHECK (shipped IN (0, 1)),
    PRIMARY KEY (batch_id, path)
);

CREATE TABLE events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    batch_id   INTEGER NOT NULL REFERENCES batches (id) ON DELETE CASCADE,
    at         TEXT    NOT NULL,
    from_state TEXT,
    to_state   TEXT    NOT NULL,
    attempt    INTEGER NOT NULL,
    detail     TEXT
);
CREATE INDEX events_by_batch ON events (batch_id, id);
