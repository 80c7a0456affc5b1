// `seqroute refit` as a job: read the log with COPY, train, evaluate against the active
// policy, write and register the candidate, and promote it when the rule says so. The learning
// and the rule are SeqRouteLearning's; this wires them to the ledger, the disk and the daemon.

import Foundation
import SeqRouteCore
import SeqRouteLearning
import SeqRouteLedger

public struct RefitReport: Sendable {
    /// What the operator reads, one line each.
    public var lines: [String] = []
    public var version: String?
    public var promoted = false
    public var evaluation: OPEComparison?
    /// True when there was too little data and nothing was changed.
    public var tooLittleData = false
}

public enum RefitJob {
    public static func run(configuration config: Configuration, db: PGConnection, since: String? = nil,
                           steps: Int? = nil, seed: UInt64 = 1, log: (String) -> Void) throws -> RefitReport {
        var report = RefitReport()
        let settings = config.refit
        log("reading the decision log (COPY)")
        let decisions = try db.readDecisions(poolID: config.pool.identity, pool: config.pool.names, since: since)
        let data = RefitData(decisions: decisions, poolSize: config.pool.count, heldOutShare: settings.heldOutShare,
                             seed: seed)
        let skipped = data.skipped.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
        report.lines.append("log: \(decisions.count) decisions; \(data.sessions) usable sessions (\(data.training.count) to train, \(data.heldOut.count) held out)" + (skipped.isEmpty ? "" : "; skipped sessions: \(skipped)"))
        guard data.sessions >= settings.minSessions, !data.heldOut.isEmpty, !data.training.isEmpty else {
            report.tooLittleData = true
            report.lines.append("too little data: \(data.sessions) usable sessions, a refit needs \(settings.minSessions) ([refit] min_sessions); nothing changed")
            return report
        }

        // Fail before minutes of training, not after, when the policy folder cannot be made.
        do {
            try FileManager.default.createDirectory(atPath: config.policyDirectory, withIntermediateDirectories: true)
        } catch {
            throw RefitError("cannot create the policy folder \(config.policyDirectory): \(error.localizedDescription)")
        }
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "UTC")
        formatter.dateFormat = "yyyyMMdd'T'HHmmss.SSS'Z'"
        let version = "refit-" + formatter.string(from: Date())
        report.version = version
        var c = RefitConfiguration()
        c.cql.steps = steps ?? settings.steps
        c.cql.seed = seed &+ 11
        c.cql.alpha = Float(settings.alpha)
        c.hbr.seed = seed &+ 7
        let featurizer = HashingFeaturizer(dimension: config.featureDimension)
        let candidate = try Refit.train(data, pool: config.pool.names, featurizer: featurizer, version: version,
                                        configuration: c, progress: log)

        log("off-policy evaluation on \(data.heldOut.count) held-out sessions")
        let active = try ActiveSetup(configuration: config).policy
        // The estimate is only as good as the probabilities it recomputes: the active policy must
        // give its own logged choices the propensities it logged.
        var own = 0, reproduced = 0
        for session in data.heldOut {
            var previous: Int?
            for d in session {
                if d.policyVersion == active.version, let a = d.model, let mu = d.propensity {
                    own += 1
                    if abs(active.probability(of: a, in: d.context(previousModel: previous)) - mu) < 1e-6 { reproduced += 1 }
                }
                previous = d.model
            }
        }
        if own > 0 { report.lines.append("the active policy reproduces \(reproduced) of the \(own) propensities it logged") }
        let lambda = settings.lambda ?? config.lambda
        let evaluation = OffPolicyEvaluation.compare(
            candidate: LearnedRoutingPolicy(learned: candidate, exploration: config.exploration,
                                            defaultHorizon: config.defaultHorizon),
            active: active, sessions: data.heldOut,
            model: Refit.rewardModel(data, modelCount: config.pool.count, configuration: c), lambda: lambda, priceScaleUSD: candidate.scale.priceScaleUSD,
            seed: seed)
        report.evaluation = evaluation
        let verdict = Refit.verdict(evaluation, settings: settings)
        for (name, e) in [(version, evaluation.candidate), (active.version, evaluation.active)] {
            report.lines.append(String(format: "%@: quality %.4f per turn, cost %.6f USD per session, bankruptcy %.4f, objective %.4f, effective sessions %.1f",
                                       name, e.quality, e.cost_usd, e.bankruptcy_rate, e.objective, e.effective_sessions))
        }

        let store = PolicyStore(directory: config.policyDirectory, activeLink: config.activePolicyLink)
        let (path, sum) = try store.write(candidate)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        struct Evaluation: Encodable {
            var comparison: OPEComparison
            var active_version: String
            var promoted: Bool
            var reason: String
        }
        let evaluationJSON = String(decoding: try encoder.encode(
            Evaluation(comparison: evaluation, active_version: active.version, promoted: verdict.promote,
                       reason: verdict.reason)), as: UTF8.self)
        let trainingJSON = String(decoding: try encoder.encode(candidate.training), as: UTF8.self)
        try db.registerPolicy(version: version, filePath: path, sha256: sum, dataFrom: data.from, dataTo: data.to,
                              trainingJSON: trainingJSON, evaluationJSON: evaluationJSON)
        report.lines.append("wrote \(path) (sha256 \(sum.prefix(16))…), registered \(version) as a candidate")
        guard verdict.promote else {
            report.lines.append("not promoted: \(verdict.reason)")
            return report
        }
        report.lines.append("promoted: \(verdict.reason)")
        report.lines.append(try PolicyActivation.activate(version, db: db, store: store, socketPath: config.socketPath))
        report.promoted = true
        return report
    }
}
