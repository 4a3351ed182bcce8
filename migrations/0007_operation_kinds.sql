-- Destinations that are not ready (docs/protocol.md, "Operation kinds"): the operation
-- that pays a payout is journaled on its row, and a payout paid by a claimable balance
-- keeps the balance's id (the hex of its ClaimableBalanceId, as Horizon shows it).
ALTER TABLE payouts ADD COLUMN op_kind text NOT NULL DEFAULT 'payment'
    CHECK (op_kind IN ('payment', 'claimable_balance', 'create_account'));
ALTER TABLE payouts ADD COLUMN balance_id text
    CHECK (balance_id IS NULL OR balance_id ~ '^00000000[0-9a-f]{64}$');
