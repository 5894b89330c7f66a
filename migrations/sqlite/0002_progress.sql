-- Live upload progress, so `status` (another process) can show bytes sent and rate; and where
-- the daemon filed a finished batch, so `retry` can find it.
ALTER TABLE batches ADD COLUMN bytes_sent INTEGER NOT NULL DEFAULT 0;
ALTER TABLE batches ADD COLUMN upload_started_at TEXT;
ALTER TABLE batches ADD COLUMN filed_path TEXT;
