// What `seqroute report` reads: a few grouped queries over a time range, each parameterized.

public struct ReportRow: Sendable, Equatable {
    /// UTC day, YYYY-MM-DD.
    public var day: String
    public var account: String
    public var model: String
    public var policyVersion: String
    /// Captures, expiries, overruns and adjustments booked that day for these decisions.
    public var spentMicros: Int64
    /// Decisions made that day (ROUTEs, bankrupt turns included).
    public var decisions: Int
    /// Mean reported quality of those decisions (nil when none was reported).
    public var meanQuality: Double?

    public init(day: String, account: String, model: String, policyVersion: String, spentMicros: Int64,
                decisions: Int, meanQuality: Double?) {
        self.day = day
        self.account = account
        self.model = model
        self.policyVersion = policyVersion
        self.spentMicros = spentMicros
        self.decisions = decisions
        self.meanQuality = meanQuality
    }
}

public struct ReportAccount: Sendable, Equatable {
    public var id: String
    public var cap: Int64
    public var spent: Int64
    public var held: Int64
    public var period: String
    public init(id: String, cap: Int64, spent: Int64, held: Int64, period: String) {
        self.id = id
        self.cap = cap
        self.spent = spent
        self.held = held
        self.period = period
    }
}

extension PGConnection {
    /// Day × account × model × policy version, for days in [from, to) (UTC dates), optionally
    /// one account. Spend is what the ledger booked that day; decisions and quality are those
    /// decided that day.
    public func reportRows(from: String, to: String, account: String?) throws -> [ReportRow] {
        try query("""
            WITH spend AS (
                SELECT (e.at AT TIME ZONE 'UTC')::date AS day, e.account_id, coalesce(d.model, '(none)') AS model,
                       coalesce(d.policy_version, '(none)') AS policy_version, sum(e.amount) AS spent
                  FROM ledger_entries e LEFT JOIN decisions d ON d.session_id = e.session_id AND d.turn = e.turn
                 WHERE e.kind IN ('capture', 'expiry', 'overrun', 'adjustment')
                   AND e.at >= $1::date AND e.at < $2::date AND ($3::text IS NULL OR e.account_id = $3)
                 GROUP BY 1, 2, 3, 4
            ), made AS (
                SELECT (d.decided_at AT TIME ZONE 'UTC')::date AS day, s.account_id,
                       coalesce(d.model, '(none)') AS model, d.policy_version,
                       count(*) AS decisions, avg(d.quality) AS quality
                  FROM decisions d JOIN sessions s ON s.id = d.session_id
                 WHERE d.decided_at >= $1::date AND d.decided_at < $2::date AND ($3::text IS NULL OR s.account_id = $3)
                 GROUP BY 1, 2, 3, 4
            )
            SELECT to_char(coalesce(m.day, p.day), 'YYYY-MM-DD'), coalesce(m.account_id, p.account_id),
                   coalesce(m.model, p.model), coalesce(m.policy_version, p.policy_version),
                   coalesce(p.spent, 0), coalesce(m.decisions, 0), m.quality
              FROM made m FULL JOIN spend p
                ON p.day = m.day AND p.account_id = m.account_id AND p.model = m.model AND p.policy_version = m.policy_version
             ORDER BY 1, 2, 3, 4
            """, [from, to, account]).map {
            ReportRow(day: $0[0] ?? "", account: $0[1] ?? "", model: $0[2] ?? "", policyVersion: $0[3] ?? "",
                      spentMicros: $0.int64(4) ?? 0, decisions: $0.int(5) ?? 0, meanQuality: $0.double(6))
        }
    }

    public func reportAccounts(account: String?) throws -> [ReportAccount] {
        try query("SELECT id, cap, spent, held, period FROM accounts WHERE $1::text IS NULL OR id = $1 ORDER BY id",
                  [account]).map {
            ReportAccount(id: $0[0] ?? "", cap: $0.int64(1) ?? 0, spent: $0.int64(2) ?? 0, held: $0.int64(3) ?? 0,
                          period: $0[4] ?? "none")
        }
    }
}
