// Operator-side ledger statements: accounts and model pools.

public struct AccountFigures: Sendable, Equatable {
    public var cap: Int64
    public var spent: Int64
    public var held: Int64
    public var line: String { "cap=\(cap) spent=\(spent) held=\(held)" }
}

extension PGConnection {
    /// Creates the account or changes its cap. Past entries are never rewritten.
    public func setAccount(_ id: String, cap: Int64) throws {
        try query("""
            INSERT INTO accounts (id, cap) VALUES ($1, $2)
            ON CONFLICT (id) DO UPDATE SET cap = EXCLUDED.cap, updated_at = now()
            """, [id, String(cap)])
    }

    /// Creates the account with this cap unless it exists.
    public func ensureAccount(_ id: String, cap: Int64) throws {
        try query("INSERT INTO accounts (id, cap) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING", [id, String(cap)])
    }

    /// Sets the account's budget period (none, daily, weekly, monthly) and time zone; its spent
    /// becomes the spend of the period under way. Refuses an unknown time zone.
    public func setPeriod(_ id: String, period: String, timeZone: String) throws {
        try query("SELECT seqroute_set_period($1, $2, $3)", [id, period, timeZone])
    }

    public func account(_ id: String) throws -> AccountFigures? {
        guard let row = try query("SELECT cap, spent, held FROM accounts WHERE id = $1", [id]).first,
              let cap = row.int64(0), let spent = row.int64(1), let held = row.int64(2) else { return nil }
        return AccountFigures(cap: cap, spent: spent, held: held)
    }

    /// Appends a correction of spend entry `entry` by the signed `amount` (seqroute_adjust());
    /// returns the new entry's id and the session's and account's spent after it.
    public func adjust(entry: Int64, amount: Int64, reason: String) throws -> (id: Int64, sessionSpent: Int64, accountSpent: Int64) {
        let row = try query("SELECT * FROM seqroute_adjust($1, $2, $3)", [String(entry), String(amount), reason])[0]
        return (row.int64(0) ?? 0, row.int64(1) ?? 0, row.int64(2) ?? 0)
    }

    public func registerPool(id: String, models: [String]) throws {
        let literal = "{" + models.map(jsonString).joined(separator: ",") + "}"
        try query("INSERT INTO model_pools (id, models) VALUES ($1, $2::text[]) ON CONFLICT (id) DO NOTHING", [id, literal])
    }
}
