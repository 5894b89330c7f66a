-- The route (a tenant: its own inbox and server) a batch goes to, and the batches made from
-- another: a resubmission from one of its rows, or one part of a batch over Jumio's row limit.
ALTER TABLE batches ADD COLUMN route TEXT;
-- user@host:port of the route when the batch was recorded: the duplicate guard is per tenant.
ALTER TABLE batches ADD COLUMN tenant TEXT;
ALTER TABLE batches ADD COLUMN parent_id INTEGER REFERENCES batches (id);
ALTER TABLE batches ADD COLUMN kind TEXT CHECK (kind IN ('resubmission', 'part'));
-- Rows of the parent's input.csv this batch holds (1-based data rows, as `validate` reports them).
ALTER TABLE batches ADD COLUMN first_row INTEGER;
ALTER TABLE batches ADD COLUMN last_row INTEGER;
-- A part's number (1-based), in order.
ALTER TABLE batches ADD COLUMN part INTEGER;
CREATE INDEX batches_by_parent ON batches (parent_id, kind);
