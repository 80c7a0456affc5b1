-- seqroute_adjust(entry, amount, note): a correction of the spend entry `entry` (a capture,
-- expiry, overrun or an earlier adjustment) by the signed `amount`, in one transaction: the
-- account is locked (seqroute_lock_accounts, which serialises every writer of its sessions),
-- the entry is appended, and both spent figures move by the amount. Refused, changing nothing,
-- when the entry does not exist or is not spend, when the amount is 0, or when it would make
-- the session's or the account's spent negative.
CREATE OR REPLACE FUNCTION seqroute_adjust(entry bigint, amount bigint, why text)
RETURNS TABLE (id bigint, session_spent bigint, account_spent bigint)
LANGUAGE plpgsql AS $$
DECLARE
    original ledger_entries%ROWTYPE;
    acc_spent bigint;
    ses_spent bigint;
BEGIN
    SELECT * INTO original FROM ledger_entries e WHERE e.id = entry;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no ledger entry %', entry USING ERRCODE = 'no_data_found';
    END IF;
    IF original.kind NOT IN ('capture', 'expiry', 'overrun', 'adjustment') THEN
        RAISE EXCEPTION 'entry % is a %, not spend: only captures, expiries, overruns and adjustments are corrected',
            entry, original.kind USING ERRCODE = 'check_violation';
    END IF;
    IF amount = 0 THEN
        RAISE EXCEPTION 'an adjustment of 0 changes nothing' USING ERRCODE = 'check_violation';
    END IF;
    IF why IS NULL OR btrim(why) = '' THEN
        RAISE EXCEPTION 'an adjustment needs a reason' USING ERRCODE = 'check_violation';
    END IF;
    PERFORM seqroute_lock_accounts(ARRAY[original.account_id]);
    SELECT a.spent INTO acc_spent FROM accounts a WHERE a.id = original.account_id;
    SELECT s.spent INTO ses_spent FROM sessions s WHERE s.id = original.session_id;
    IF acc_spent + amount < 0 OR ses_spent + amount < 0 THEN
        RAISE EXCEPTION 'the adjustment would make spent negative (session %, account %)', ses_spent, acc_spent
            USING ERRCODE = 'check_violation';
    END IF;
    INSERT INTO ledger_entries (kind, account_id, session_id, turn, amount, corrects, note)
    VALUES ('adjustment', original.account_id, original.session_id, original.turn, amount, entry, why)
    RETURNING ledger_entries.id INTO id;
    UPDATE sessions s SET spent = s.spent + amount WHERE s.id = original.session_id
    RETURNING s.spent INTO session_spent;
    UPDATE accounts a SET spent = a.spent + amount, updated_at = now() WHERE a.id = original.account_id
    RETURNING a.spent INTO account_spent;
    RETURN NEXT;
END $$;

-- Only the ledger's owner (`seqroute ledger adjust`) corrects the ledger.
REVOKE ALL ON FUNCTION seqroute_adjust(bigint, bigint, text) FROM PUBLIC;
