// The `policies` table: every trained policy, its figures and its status. At most one is
// active (a unique index says so); activating one retires the one before in one transaction.

public struct PolicyEntry: Sendable, Equatable {
    public var version: String
    public var createdAt: String
    public var status: String
    public var filePath: String?
    public var sha256: String?
    public var dataFrom: String?
    public var dataTo: String?
    /// JSON objects, as stored.
    public var training: String
    public var evaluation: String
}

extension PGConnection {
    /// Records a trained policy as a candidate. `dataFrom`/`dataTo` are seconds since 1970.
    public func registerPolicy(version: String, filePath: String, sha256: String, dataFrom: Double?, dataTo: Double?,
                               trainingJSON: String, evaluationJSON: String) throws {
        try query("""
            INSERT INTO policies (version, data_from, data_to, training, evaluation, file_path, file_sha256, status)
            VALUES ($1, to_timestamp($2::double precision), to_timestamp($3::double precision), $4::jsonb, $5::jsonb,
                    $6, $7, 'candidate')
            """, [version, dataFrom.map { "\($0)" }, dataTo.map { "\($0)" }, trainingJSON, evaluationJSON, filePath, sha256])
    }

    public func policies() throws -> [PolicyEntry] {
        try query(Self.policyColumns + " ORDER BY created_at, version").map(Self.policyEntry)
    }

    public func policy(_ version: String) throws -> PolicyEntry? {
        try query(Self.policyColumns + " WHERE version = $1", [version]).first.map(Self.policyEntry)
    }

    /// Makes `version` the active policy and retires the one before, atomically.
    public func markActive(_ version: String) throws {
        try query("BEGIN")
        do {
            try query("UPDATE policies SET status = 'retired' WHERE status = 'active' AND version <> $1", [version])
            let rows = try query("UPDATE policies SET status = 'active' WHERE version = $1 RETURNING version", [version])
            guard !rows.isEmpty else { throw PGError(sqlState: nil, message: "no policy \(version)", connectionLost: false) }
            try query("COMMIT")
        } catch {
            _ = try? query("ROLLBACK")
            throw error
        }
    }

    private static let policyColumns = """
        SELECT version, to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'), status, file_path,
               file_sha256, to_char(data_from AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
               to_char(data_to AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'), training::text, evaluation::text
          FROM policies
        """

    private static func policyEntry(_ r: PGRow) -> PolicyEntry {
        PolicyEntry(version: r[0] ?? "", createdAt: r[1] ?? "", status: r[2] ?? "", filePath: r[3], sha256: r[4],
                    dataFrom: r[5], dataTo: r[6], training: r[7] ?? "{}", evaluation: r[8] ?? "{}")
    }
}
