-- The database's identity, made with its schema: a daemon that finds another (or none) knows
-- its database was emptied or replaced under it and stops. And who filed a batch's folder.
CREATE TABLE installation (
    id         TEXT PRIMARY KEY NOT NULL,
    created_at TEXT NOT NULL
);
INSERT INTO installation (id, created_at) VALUES (lower(hex(randomblob(16))), strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));
ALTER TABLE batches ADD COLUMN filed_by TEXT;
