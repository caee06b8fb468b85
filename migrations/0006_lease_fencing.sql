-- Fencing tokens for the per-tenant sync lease (issue: split brain can bill twice).
-- Every acquisition by a new owner increments `token`; a holder checks (owner, token, not expired)
-- with the row locked FOR UPDATE inside each ledger transaction, so a replica paused past its
-- lease can no longer commit a window pass after another replica took over. Released leases keep
-- their row (expired) so the token never goes back.
ALTER TABLE sync_leases ADD COLUMN token bigint NOT NULL DEFAULT 0;
