-- Why a batch was rejected is a field, never parsed from a message; a duplicate names its original.
ALTER TABLE batches ADD COLUMN reject_reason TEXT CHECK (reject_reason IN ('invalid', 'duplicate'));
ALTER TABLE batches ADD COLUMN duplicate_of INTEGER REFERENCES batches (id);
