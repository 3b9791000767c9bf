-- Subscription checkpoints (otp_sms_core::CheckpointStore): how far each named subscription
-- has handled the event feed, shared by every process on the schema. A save only moves a
-- checkpoint forward (GREATEST), so a slow process cannot send a faster one's back.

CREATE TABLE checkpoints (
    name     text   PRIMARY KEY,
    position bigint NOT NULL CHECK (position >= 0)
);
