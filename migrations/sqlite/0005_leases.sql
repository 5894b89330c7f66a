-- Fleet mode (PostgreSQL) leases a batch to one host at a time. With SQLite a kernel lock does
-- that; the columns exist so both databases run the same statements, and stay empty here.
ALTER TABLE batches ADD COLUMN holder TEXT;
ALTER TABLE batches ADD COLUMN lease_token INTEGER NOT NULL DEFAULT 0;
ALTER TABLE batches ADD COLUMN lease_expires_at TEXT;
ALTER TABLE events ADD COLUMN host TEXT;
