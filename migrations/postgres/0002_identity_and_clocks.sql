-- The database's identity, made with its schema: a daemon that finds another (or none) knows
-- its database was emptied or replaced under it and stops claiming. Who filed a batch's folder.
-- Each host's machine (a dead daemon's id is free at once on its own machine) and its clock's
-- offset from the database's, as measured at its last heartbeat.
CREATE TABLE installation (
    id         TEXT PRIMARY KEY,
    created_at TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP
);
INSERT INTO installation (id) VALUES (gen_random_uuid()::text);
ALTER TABLE batches ADD COLUMN filed_by TEXT;
ALTER TABLE hosts ADD COLUMN machine TEXT;
ALTER TABLE hosts ADD COLUMN clock_offset_ms BIGINT;
