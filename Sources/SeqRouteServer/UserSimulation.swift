// Simulated users for `seqroute simulate`: sessions built from a canonical query table are
// played against the real daemon over its socket. Each turn sends the query's task and text;
// the user then reports the real cost and quality that the chosen model had on that query.

import Foundation
import SeqRouteCore
import SeqRouteLearning

public struct SimulationOptions: Sendable {
    public var socketPath: String
    public var sessions: Int
    public var connections: Int
    /// Session budgets: B = T · (h̄ + ρ (c̄ − h̄)) with ρ drawn uniformly from this range per
    /// session, h̄ the cheapest model's mean hold (as the daemon computes holds) and c̄ the
    /// strongest model's mean cost on the table.
    public var rho: ClosedRange<Double>
    public var account: String?
    public var lambda: Double?
    public var seed: UInt64
    /// Prefix of the session ids, so that phases and runs never collide.
    public var prefix: String

    public init(socketPath: String, sessions: Int, connections: Int, rho: ClosedRange<Double>, account: String?,
                lambda: Double?, seed: UInt64, prefix: String) {
        self.socketPath = socketPath
        self.sessions = sessions
        self.connections = connections
        self.rho = rho
        self.account = account
        self.lambda = lambda
        self.seed = seed
        self.prefix = prefix
    }
}

public struct PhaseReport: Sendable {
    public var sessions = 0
    public var turns = 0
    public var qualitySum = 0.0
    public var costMicros: Int64 = 0
    public var bankruptSessions = 0
    public var overBudgetSessions = 0
    public var failedRequests = 0
    public var firstFailures: [String] = []
    /// Decisions per policy version named in the answers.
    public var policies: [String: Int] = [:]
    public var seconds = 0.0

    public init() {}

    public var quality: Double { turns > 0 ? qualitySum / Double(turns) : 0 }
    public var costUSDPerSession: Double { sessions > 0 ? Double(costMicros) / 1e6 / Double(sessions) : 0 }
    public var bankruptcyRate: Double { sessions > 0 ? Double(bankruptSessions) / Double(sessions) : 0 }

    public var summary: String {
        String(format: "sessions=%d turns=%d quality=%.4f cost_usd_per_session=%.6f bankruptcy_rate=%.4f over_budget=%d failed_requests=%d seconds=%.1f policies=%@",
               sessions, turns, quality, costUSDPerSession, bankruptcyRate, overBudgetSessions, failedRequests, seconds,
               policies.sorted { $0.key < $1.key }.map { "\($0.key):\($0.value)" }.joined(separator: ","))
    }

    public mutating func add(_ o: PhaseReport) {
        sessions += o.sessions; turns += o.turns; qualitySum += o.qualitySum; costMicros += o.costMicros
        bankruptSessions += o.bankruptSessions; overBudgetSessions += o.overBudgetSessions
        failedRequests += o.failedRequests
        firstFailures += o.firstFailures.prefix(max(0, 5 - firstFailures.count))
        for (k, v) in o.policies { policies[k, default: 0] += v }
    }
}

public struct UserSimulation: Sendable {
    public let table: QueryTable
    public let pool: ModelPool
    let cheapestMeanHold: Double
    let strongestMeanCost: Double

    /// The table's models must be the pool's (any order); holds are computed as the daemon does.
    public init(table: QueryTable, pool: ModelPool) throws {
        guard Set(table.models) == Set(pool.names), table.models.count == pool.count else {
            throw RefitError( "the table's models \(table.models) are not the configured pool \(pool.names)")
        }
        guard table.count > 0 else { throw RefitError( "the query table is empty") }
        self.table = table
        self.pool = pool
        var holdSum = [Double](repeating: 0, count: pool.count)
        for r in table.records {
            let holds = pool.holds(promptTokens: HashingFeaturizer.estimatedTokens(of: r.text))
            for m in holds.indices { holdSum[m] += Double(holds[m]) }
        }
        cheapestMeanHold = holdSum.min()! / Double(table.count) / 1e6
        let stats = TrainingStats(training: table)
        strongestMeanCost = stats.meanCostUSD[stats.strongestModel]
    }

    public func budgetMicros(turns: Int, rho: Double) -> Int64 {
        let perTurn = cheapestMeanHold + rho * max(0, strongestMeanCost - cheapestMeanHold)
        return Int64((Double(turns) * perTurn * 1e6).rounded(.down))
    }

    /// Plays `o.sessions` sessions over `o.connections` connections and adds up what the users saw.
    public func run(_ o: SimulationOptions) -> PhaseReport {
        let sessions = SessionGenerator().sessions(count: o.sessions, from: table, seed: o.seed)
        var random = SplitMix64(seed: o.seed &+ 17)
        let budgets = sessions.map { budgetMicros(turns: $0.horizon, rho: o.rho.lowerBound + random.unit() * (o.rho.upperBound - o.rho.lowerBound)) }
        final class Total: @unchecked Sendable {
            let lock = NSLock()
            var report = PhaseReport()
        }
        let total = Total()
        let group = DispatchGroup()
        let started = Date()
        for c in 0..<max(1, min(o.connections, sessions.count)) {
            group.enter()
            let thread = Thread {
                defer { group.leave() }
                var mine = PhaseReport()
                var client: LineClient?
                for s in stride(from: c, to: sessions.count, by: max(1, min(o.connections, sessions.count))) {
                    do {
                        if client == nil { client = try LineClient(path: o.socketPath) }
                        play(sessions[s], id: "\(o.prefix)-\(s)", budget: budgets[s], options: o, client: client!, into: &mine)
                    } catch {
                        client = nil
                        mine.failedRequests += 1
                        if mine.firstFailures.count < 5 { mine.firstFailures.append("\(error)") }
                    }
                }
                total.lock.withLock { total.report.add(mine) }
            }
            thread.stackSize = 1 << 20
            thread.start()
        }
        group.wait()
        var report = total.report
        report.seconds = Date().timeIntervalSince(started)
        return report
    }

    private func play(_ session: Session, id: String, budget: Int64, options o: SimulationOptions, client: LineClient,
                      into r: inout PhaseReport) {
        func ask(_ line: String) -> [String: String]? {
            do {
                let answer = try client.request(line)
                if answer.hasPrefix("OK") { return LineClient.fields(answer) }
                r.failedRequests += 1
                if r.firstFailures.count < 5 { r.firstFailures.append("\(line.prefix(60)) -> \(answer)") }
            } catch {
                r.failedRequests += 1
                if r.firstFailures.count < 5 { r.firstFailures.append("\(line.prefix(60)) -> \(error)") }
            }
            return nil
        }
        var open = "OPEN \(id) budget=\(budget) horizon=\(session.horizon)"
        if let a = o.account { open += " account=\(LineProtocol.percentEncoded(a))" }
        if let l = o.lambda { open += " lambda=\(l)" }
        guard ask(open) != nil else { return }
        var spent: Int64 = 0
        var bankrupt = false
        for q in session.queries {
            let record = table.records[q]
            guard let f = ask("ROUTE \(id) task=\(LineProtocol.percentEncoded(record.task)) text=\(LineProtocol.percentEncoded(record.text))"),
                  let turn = f["turn"] else { return }
            r.turns += 1
            if f["bankrupt"] != nil { bankrupt = true; continue }
            guard let name = f["model"], let m = table.models.firstIndex(of: name) else { return }
            r.policies[f["policy"] ?? "?", default: 0] += 1
            let cost = Int64((table.costUSD(q, m) * 1e6).rounded())
            let quality = table.quality(q, m)
            guard ask("REPORT \(id) \(turn) cost=\(cost) quality=\(String(format: "%.6f", quality))") != nil else { return }
            spent += cost
            r.qualitySum += quality
        }
        guard ask("CLOSE \(id)") != nil else { return }
        r.sessions += 1
        r.costMicros += spent
        if bankrupt { r.bankruptSessions += 1 }
        if spent > budget { r.overBudgetSessions += 1 }
    }
}
