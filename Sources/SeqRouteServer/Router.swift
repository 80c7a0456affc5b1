// Answers one protocol request: the policy decides, the ledger commits, then the answer goes
// out. No socket here; the socket server feeds lines in and writes answers out.

import Foundation
import Histogram
import SeqRouteCore
import SeqRouteLearning
import SeqRouteLedger

/// What the daemon knows of a session between requests. The ledger stays the authority: a
/// decision made on an outdated view is answered `stale` by the ledger and decided again.
struct SessionView: Sendable {
    var budget: Int64
    var spent: Int64
    var held: Int64
    var turns: Int
    var accountRemaining: Int64
    var horizon: Int?
    var lambda: Double?
    var bankrupt: Bool
    var closed: Bool
    var lastModel: Int?
    /// The session's account, known when this daemon opened the session.
    var account: String?

    init(statusOf r: LedgerResult, account: String? = nil) {
        self.account = account
        budget = r.budget ?? 0
        spent = r.spent ?? 0
        held = r.held ?? 0
        turns = r.turn ?? 0
        accountRemaining = r.accountRemaining ?? 0
        horizon = r.horizon
        lambda = r.lambda
        bankrupt = r.state == "bankrupt"
        closed = r.closed ?? false
    }

    var budgetState: BudgetState {
        BudgetState(sessionBudget: budget, sessionSpent: spent, sessionHeld: held, accountRemaining: accountRemaining)
    }
}

/// The policy and configuration in force; swapped whole on reload.
public struct ActiveSetup: Sendable {
    public var configuration: Configuration
    public var policy: any RoutingPolicy
    public var featurizer: HashingFeaturizer
    /// The pool's identity, computed once: every decision row records it.
    public var poolID: String

    /// Loads the configured policy file; a file that does not fit is refused. No file
    /// configured, or none there yet (no refit has promoted one): the cold-start policy.
    public init(configuration: Configuration) throws {
        self.configuration = configuration
        self.featurizer = HashingFeaturizer(dimension: configuration.featureDimension)
        self.poolID = configuration.pool.identity
        let path = configuration.activePolicyLink
        if FileManager.default.fileExists(atPath: path) {
            let learned = try LearnedPolicy.load(path: path, pool: configuration.pool, featurizer: featurizer)
            self.policy = LearnedRoutingPolicy(learned: learned, exploration: configuration.exploration,
                                               defaultHorizon: configuration.defaultHorizon)
        } else {
            // A link left dangling, or a policy_file that names nothing, says so in the log.
            if configuration.policyFile != nil || (try? FileManager.default.destinationOfSymbolicLink(atPath: path)) != nil {
                logLine("<4>no policy file at \(path): routing with the cold-start policy")
            }
            self.policy = PacingPolicy(pool: configuration.pool, defaultHorizon: configuration.defaultHorizon,
                                       exploration: configuration.coldStartExploration)
        }
    }
}

public final class Router: @unchecked Sendable {
    private let lock = NSLock()
    private var setup: ActiveSetup
    private var sessions: [String: SessionView] = [:]
    private var random: SplitMix64
    private let committer: GroupCommitter
    private let reloader: @Sendable () throws -> ActiveSetup
    let stats = Stats()

    /// Above this many cached sessions the cache starts afresh; views reload from the ledger.
    private let maxCachedSessions = 200_000

    private let metrics: DaemonMetrics?

    public init(setup: ActiveSetup, committer: GroupCommitter, reloader: @escaping @Sendable () throws -> ActiveSetup,
                metrics: DaemonMetrics? = nil) {
        self.setup = setup
        self.committer = committer
        self.reloader = reloader
        self.metrics = metrics
        metrics?.policy(setup.policy.version)
        self.random = SplitMix64(seed: setup.configuration.seed)
    }

    public var current: ActiveSetup {
        lock.lock()
        defer { lock.unlock() }
        return setup
    }

    /// Answers one line (without its newline); `peerUID` is the client's uid, which ROUTE records.
    public func answer(line: some Collection<UInt8>, peerUID: UInt32? = nil) async -> String {
        let started = DispatchTime.now().uptimeNanoseconds
        let reply: String
        var isRoute = false
        switch LineProtocol.parse(line) {
        case .failure(let e):
            reply = e.line
        case .success(let request):
            if case .route = request { isRoute = true }
            reply = await handle(request, peerUID: peerUID)
        }
        let elapsed = DispatchTime.now().uptimeNanoseconds - started
        stats.record(reply: reply, isRoute: isRoute, nanoseconds: elapsed)
        metrics?.record(reply: reply, route: isRoute, nanoseconds: elapsed)
        return reply
    }

    func handle(_ request: Request, peerUID: UInt32?) async -> String {
        switch request {
        case .ping: return "OK pong"
        case .open(let r): return await open(r)
        case .route(let r): return await route(r, peerUID: peerUID)
        case .report(let r): return await report(r)
        case let .feedback(session, turn, quality):
            return await ledger(.feedback(session: session, turn: turn, quality: quality)) { _ in "OK" }
        case .close(let session):
            return await ledger(.close(session: session)) { r in
                self.forget(session)
                return OKAnswer([("spent", "\(r.spent ?? 0)"), ("turns", "\(r.turn ?? 0)")]).line
            }
        case .status(let session):
            return await ledger(.status(session: session)) { r in
                let v = SessionView(statusOf: r, account: self.lock.withLock { self.sessions[session]?.account })
                self.remember(session, v)
                return OKAnswer([("budget", "\(v.budget)"), ("spent", "\(v.spent)"), ("held", "\(v.held)"),
                                 ("remaining", "\(v.budget - v.spent - v.held)"), ("turn", "\(v.turns)"),
                                 ("state", r.state ?? "open"),
                                 ("closed", v.closed ? "1" : "0")]).line
            }
        // Loading and checking a policy file takes a while: not on the connection's event loop.
        case .reload: return await Task.detached { self.reload() }.value
        case .stats: return statsLine()
        }
    }

    // MARK: verbs

    private func open(_ r: OpenRequest) async -> String {
        let config = current.configuration
        guard let budget = r.budget ?? (config.defaultSessionBudget > 0 ? config.defaultSessionBudget : nil) else {
            return ProtocolError.badRequest("OPEN needs budget=<micros> (no default_session_budget is configured)").line
        }
        let account = r.account ?? config.defaultAccount
        return await ledger(.open(session: r.session, account: account, user: r.user, budget: budget,
                                  horizon: r.horizon, lambda: r.lambda)) { res in
            self.remember(r.session, SessionView(statusOf: res, account: account))
            return OKAnswer([("session", r.session), ("remaining", "\(budget)")]).line
        }
    }

    private func route(_ r: RouteRequest, peerUID: UInt32?) async -> String {
        let active = current
        let config = active.configuration
        let pool = config.pool
        let features: [Double]
        if let f = r.features {
            guard f.count == active.featurizer.dimension else {
                return ProtocolError.badRequest("features has \(f.count) values; this daemon expects \(active.featurizer.dimension)").line
            }
            features = f
        } else {
            features = active.featurizer.features(of: r.text ?? "")
        }
        let tokens = r.tokens ?? r.text.map(HashingFeaturizer.estimatedTokens) ?? config.defaultPromptTokens
        let holds = pool.holds(promptTokens: tokens)
        let minHold = holds.min() ?? 0

        var view: SessionView
        switch await self.view(of: r.session) {
        case .failure(let f): return failureLine(f)
        case .success(nil): return ProtocolError("unknown_session", "no session \(LineProtocol.percentEncoded(r.session))").line
        case .success(let v?): view = v
        }
        for _ in 0..<64 {
            if view.closed { return ProtocolError("closed", "session is closed").line }
            let turn = view.turns + 1
            let lambda = r.lambda ?? view.lambda ?? config.lambda
            let context = DecisionContext(features: features, task: r.task, turn: turn, horizon: view.horizon,
                                          budget: view.budgetState, lambda: lambda, holds: holds,
                                          previousModel: view.lastModel)
            var decision: Decision?
            if !view.bankrupt && context.anyFeasible {
                decision = lock.withLock { active.policy.decide(context, random: &random) }
                precondition(context.feasible[decision!.model], "policy \(active.policy.version) chose an infeasible model")
            }
            let record = RouteRecord(
                session: r.session, turn: turn, model: decision.map { pool.models[$0.model].name },
                hold: decision.map { holds[$0.model] } ?? 0, minHold: minHold,
                policyVersion: active.policy.version, lambda: lambda, poolID: active.poolID, task: r.task,
                promptTokens: tokens, features: features,
                budgetState: [Double(turn), Double(view.horizon ?? 0), Double(view.budget), Double(view.spent),
                              Double(view.held), Double(view.accountRemaining)],
                holds: holds, feasible: context.feasible, propensity: decision?.propensity, scores: decision?.scores,
                peerUID: peerUID, account: view.account)
            let result = await committer.submit(.route(record))
            switch result {
            case .failure(let f): return failureLine(f)
            case .success(let res):
                switch res.status {
                case "ok":
                    view.turns = turn
                    view.held += record.hold
                    view.accountRemaining = res.accountRemaining ?? view.accountRemaining
                    view.lastModel = decision?.model
                    remember(r.session, view)
                    return OKAnswer([("turn", "\(turn)"), ("model", record.model!), ("hold", "\(record.hold)"),
                                     ("remaining", "\(res.remaining ?? 0)"), ("policy", record.policyVersion)]).line
                case "bankrupt":
                    view.turns = turn
                    view.bankrupt = true
                    view.accountRemaining = res.accountRemaining ?? view.accountRemaining
                    remember(r.session, view)
                    var pairs = [("turn", "\(turn)"), ("bankrupt", "1")]
                    if let fallback = config.fallbackModel { pairs.append(("model", fallback)) }
                    return OKAnswer(pairs).line
                case "stale":
                    view = SessionView(statusOf: res, account: view.account)
                    remember(r.session, view)
                case "unknown_session" where view.account != nil:
                    // Not under the account remembered (a memory gone wrong): the ledger looks it up.
                    view.account = nil
                    remember(r.session, view)
                case "unknown_session":
                    forget(r.session)
                    return ProtocolError("unknown_session", "no session \(LineProtocol.percentEncoded(r.session))").line
                case "closed":
                    forget(r.session)
                    return ProtocolError("closed", "session is closed").line
                default:
                    return ProtocolError("internal", "unexpected ledger answer \(res.status)").line
                }
            }
        }
        return ProtocolError("busy", "the session's budget kept changing under this request; try again").line
    }

    private func report(_ r: ReportRequest) async -> String {
        // The account remembered spares the ledger a lookup; a session not found under it (a
        // memory gone wrong) is looked up after all.
        let account = lock.withLock { sessions[r.session]?.account }
        var result = await committer.submit(.report(r, account: account))
        if account != nil, case .success(let res) = result, res.status == "unknown_session" {
            lock.withLock { sessions[r.session]?.account = nil }
            result = await committer.submit(.report(r, account: nil))
        }
        return answered(result) { res in
            self.lock.lock()
            if var v = self.sessions[r.session] {
                v.spent = res.spent ?? v.spent
                v.held = res.held ?? v.held
                v.accountRemaining = res.accountRemaining ?? v.accountRemaining
                self.sessions[r.session] = v
            }
            self.lock.unlock()
            return OKAnswer([("spent", "\(res.answerSpent ?? 0)"), ("remaining", "\(res.answerRemaining ?? 0)")]).line
        }
    }

    /// RELOAD (the verb, SIGHUP and ExecReload= all come here): systemd hears RELOADING=1 before
    /// and READY=1 after, whether or not the new setup was taken.
    private func reload() -> String {
        SystemdNotifier.notify("RELOADING=1\nMONOTONIC_USEC=\(SystemdNotifier.monotonicMicroseconds)")
        defer { SystemdNotifier.notify("READY=1") }
        do {
            let next = try reloader()
            lock.lock()
            setup = next
            lock.unlock()
            logLine("<6>reload: policy \(next.policy.version)")
            metrics?.policy(next.policy.version)
            return OKAnswer([("policy", next.policy.version)]).line
        } catch {
            logLine("<3>reload refused: \(error); the old policy and configuration stay")
            return ProtocolError("reload_failed", "\(error); the old policy and configuration stay").line
        }
    }

    private func statsLine() -> String {
        let s = stats.snapshot()
        let c = committer.counterSnapshot
        lock.lock()
        let cached = sessions.count
        let version = setup.policy.version
        lock.unlock()
        return OKAnswer([
            ("requests", "\(s.requests)"), ("decisions", "\(s.decisions)"), ("errors", "\(s.errors)"),
            ("route_p50_us", "\(s.p50)"), ("route_p99_us", "\(s.p99)"), ("route_p999_us", "\(s.p999)"),
            ("policy", version), ("batches", "\(c.batches)"),
            ("mean_batch", c.batches > 0 ? String(format: "%.2f", Double(c.operations) / Double(c.batches)) : "0"),
            ("largest_batch", "\(c.largestBatch)"), ("expired_holds", "\(c.expiredHolds)"),
            ("reconnects", "\(c.reconnects)"), ("sessions_cached", "\(cached)"),
            ("ledger", committer.isConnected ? "up" : "down"),
        ]).line
    }

    // MARK: helpers

    /// Sends one operation; answers `ok` through `onOK`, every other status as its ERR line.
    private func ledger(_ op: LedgerOperation, onOK: (LedgerResult) -> String) async -> String {
        answered(await committer.submit(op), onOK: onOK)
    }

    private func answered(_ result: Result<LedgerResult, LedgerFailure>, onOK: (LedgerResult) -> String) -> String {
        switch result {
        case .failure(let f): return failureLine(f)
        case .success(let r):
            if r.status == "ok" { return onOK(r) }
            return errorLine(for: r)
        }
    }

    private func errorLine(for r: LedgerResult) -> String {
        switch r.status {
        case "unknown_session": return ProtocolError("unknown_session", "no such session").line
        case "unknown_account": return ProtocolError("unknown_account", "no such account; create it with seqroute account set").line
        case "exists": return ProtocolError("exists", "a session with this id exists").line
        case "unknown_turn": return ProtocolError("unknown_turn", "that turn of the session was never routed to a model").line
        case "conflict": return ProtocolError("conflict", "that turn was already reported with other figures").line
        case "expired": return ProtocolError("expired", "the hold of that turn expired and was captured in full (\(r.hold ?? 0))").line
        case "closed": return ProtocolError("closed", "session is closed").line
        default: return ProtocolError("internal", "unexpected ledger answer \(r.status)").line
        }
    }

    private func failureLine(_ f: LedgerFailure) -> String {
        switch f {
        case .unavailable(let why): return ProtocolError("unavailable", why).line
        case .internalError(let why): return ProtocolError("internal", "the ledger refused the request: \(why)").line
        }
    }

    /// The session as the daemon last saw it, else as the ledger has it; nil when it does not exist.
    private func view(of session: String) async -> Result<SessionView?, LedgerFailure> {
        if let cached = lock.withLock({ sessions[session] }) { return .success(cached) }
        switch await committer.submit(.status(session: session)) {
        case .failure(let f): return .failure(f)
        case .success(let r):
            guard r.status == "ok" else { return .success(nil) }
            let v = SessionView(statusOf: r)
            remember(session, v)
            return .success(v)
        }
    }

    private func remember(_ session: String, _ v: SessionView) {
        lock.lock()
        if sessions.count >= maxCachedSessions && sessions[session] == nil { sessions.removeAll(keepingCapacity: true) }
        sessions[session] = v
        lock.unlock()
    }

    private func forget(_ session: String) {
        lock.lock()
        sessions.removeValue(forKey: session)
        lock.unlock()
    }
}

/// Request counters and the ROUTE latency histogram.
final class Stats: @unchecked Sendable {
    struct Snapshot {
        var requests: Int, decisions: Int, errors: Int
        var p50: UInt64, p99: UInt64, p999: UInt64
    }
    private let lock = NSLock()
    private var requests = 0, decisions = 0, errors = 0
    private var routeMicros = Histogram<UInt64>(highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: .three)

    func record(reply: String, isRoute: Bool, nanoseconds: UInt64) {
        lock.lock()
        requests += 1
        if reply.hasPrefix("ERR") { errors += 1 }
        if isRoute {
            if reply.hasPrefix("OK") { decisions += 1 }
            _ = routeMicros.record(min(nanoseconds / 1_000, 60_000_000))
        }
        lock.unlock()
    }

    func snapshot() -> Snapshot {
        lock.lock()
        defer { lock.unlock() }
        return Snapshot(requests: requests, decisions: decisions, errors: errors,
                        p50: routeMicros.valueAtPercentile(50), p99: routeMicros.valueAtPercentile(99),
                        p999: routeMicros.valueAtPercentile(99.9))
    }
}
