-- Corrections the accountant's way: an `adjustment` entry references the entry it corrects
-- (`corrects`) and says why (`note`); its amount is signed (negative gives money back). No
-- entry is ever edited. seqroute_adjust() in sql/functions/3_adjustments.sql writes them.
ALTER TABLE ledger_entries ADD COLUMN corrects bigint REFERENCES ledger_entries (id);
ALTER TABLE ledger_entries ADD COLUMN note text;
ALTER TABLE ledger_entries DROP CONSTRAINT ledger_entries_kind_check;
ALTER TABLE ledger_entries ADD CONSTRAINT ledger_entries_kind_check
    CHECK (kind IN ('hold', 'capture', 'release', 'expiry', 'overrun', 'adjustment'));
ALTER TABLE ledger_entries DROP CONSTRAINT ledger_entries_amount_check;
ALTER TABLE ledger_entries ADD CONSTRAINT ledger_entries_amount_check
    CHECK (amount > 0 OR (kind = 'adjustment' AND amount <> 0));
ALTER TABLE ledger_entries ADD CONSTRAINT ledger_entries_adjustment_refers
    CHECK ((kind = 'adjustment') = (corrects IS NOT NULL));
