-- Live upload progress, so `status` (another process) can show bytes sent and rate.
ALTER TABLE batches ADD COLUMN bytes_sent INTEGER NOT NULL DEFAULT 0;
ALTER TABLE batches ADD COLUMN upload_started_at TEXT;
