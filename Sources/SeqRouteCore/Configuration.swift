#if canImport(Glibc)
import Glibc
#endif

// The daemon's configuration (config/seqroute.toml), validated: a bad value is refused with a
// message that names its key.

public struct ConfigError: Error, CustomStringConvertible, Sendable {
    public var key: String
    public var message: String
    public init(key: String, _ message: String) {
        self.key = key
        self.message = message
    }
    public var description: String { key.isEmpty ? message : "\(key): \(message)" }
}

public struct Configuration: Sendable, Equatable {
    // [server]
    public var socketPath = "/run/seqroute/seqroute.sock"
    public var socketMode: UInt32 = 0o660
    public var maxLineBytes = 65_536
    /// Connections beyond this are answered `ERR busy` and closed.
    public var maxConnections = 4_096
    /// Where Prometheus metrics are served (GET /metrics): a Unix socket path, or a TCP port
    /// on 127.0.0.1; neither: not served.
    public var metricsSocket: String?
    public var metricsPort: Int?
    /// Group of the socket file the daemon binds; nil: the daemon's own.
    public var socketGroup: UInt32?
    /// Who may connect (by SO_PEERCRED); both empty: whoever the socket's mode lets in.
    public var allowedUIDs: [UInt32] = []
    public var allowedGIDs: [UInt32] = []
    // [ledger]
    /// Empty: start the embedded PostgreSQL cluster in `dataDirectory`.
    public var dsn = ""
    public var dataDirectory = ".seqroute"
    public var holdExpirySeconds = 600
    public var defaultAccount = "default"
    public var defaultAccountCap: Int64 = 100_000_000
    public var maxBatch = 512
    // [routing]
    public var defaultSessionBudget: Int64 = 0
    public var defaultHorizon = 8
    public var lambda = 0.0
    /// Exploration of a trained policy, and of the cold-start policy: a cold start knows
    /// nothing yet, and what it logs is all the first refit has to learn from.
    public var exploration = 0.05
    public var coldStartExploration = 0.2
    public var defaultPromptTokens = 500
    public var fallbackModel: String?
    public var seed: UInt64 = 1
    public var featureDimension = 64
    /// The policy file (or the link to it) the daemon loads; nil: `activePolicyLink`'s default.
    public var policyFile: String?
    // [refit]
    public var refit = RefitSettings()

    /// What the daemon loads, and what a refit or `policy activate` points at the active version:
    /// `[routing] policy_file`, by default `<data_dir>/policies/active.json`. While there is no
    /// file there (no policy promoted yet) the daemon routes with the cold-start policy.
    public var activePolicyLink: String { policyFile ?? dataDirectory + "/policies/active.json" }
    /// Where trained versions are written: `[refit] policy_dir`, by default `<data_dir>/policies`.
    public var policyDirectory: String { refit.policyDirectory ?? dataDirectory + "/policies" }
    // [[models]]
    public var pool = ModelPool(models: [])

    public init() {}

    /// Reads and validates a configuration file's text.
    public static func parse(_ text: String) throws -> Configuration {
        let doc: [String: TOMLValue]
        do { doc = try TOML.parse(text) } catch let e as TOMLError {
            throw ConfigError(key: "", "cannot read configuration: \(e)")
        }
        var c = Configuration()
        let known: Set<String> = ["server", "ledger", "routing", "refit", "models"]
        for k in doc.keys where !known.contains(k) {
            throw ConfigError(key: k, "unknown section or key")
        }
        var server = try Section(doc, "server", ["socket", "socket_mode", "socket_group", "max_line_bytes",
                                                 "max_connections", "allowed_uids", "allowed_groups", "metrics_socket",
                                                 "metrics_port"])
        c.socketPath = try server.string("socket") ?? c.socketPath
        if let mode = try server.string("socket_mode") {
            guard let m = UInt32(mode, radix: 8), m <= 0o777 else {
                throw ConfigError(key: "server.socket_mode", "must be an octal mode such as \"0660\"")
            }
            c.socketMode = m
        }
        c.maxLineBytes = try server.int("max_line_bytes", 64...16_777_216) ?? c.maxLineBytes
        c.maxConnections = try server.int("max_connections", 1...1_000_000) ?? c.maxConnections
        c.metricsSocket = try server.string("metrics_socket").flatMap { $0.isEmpty ? nil : $0 }
        c.metricsPort = try server.int("metrics_port", 0...65_535).flatMap { $0 == 0 ? nil : $0 }
        if c.metricsSocket != nil && c.metricsPort != nil {
            throw ConfigError(key: "server.metrics_port", "give metrics_socket or metrics_port, not both")
        }
        if let g = try server.string("socket_group"), !g.isEmpty { c.socketGroup = try groupID(g, key: "server.socket_group") }
        c.allowedUIDs = try server.list("allowed_uids").map { v in
            guard case .integer(let i) = v, let uid = UInt32(exactly: i) else {
                throw ConfigError(key: "server.allowed_uids", "must be a list of numeric uids")
            }
            return uid
        }
        c.allowedGIDs = try server.list("allowed_groups").map { v in
            switch v {
            case .integer(let i):
                guard let gid = UInt32(exactly: i) else { throw ConfigError(key: "server.allowed_groups", "\(i) is not a gid") }
                return gid
            case .string(let name): return try groupID(name, key: "server.allowed_groups")
            default: throw ConfigError(key: "server.allowed_groups", "must be a list of group names or gids")
            }
        }

        var ledger = try Section(doc, "ledger", ["dsn", "data_dir", "hold_expiry_seconds", "default_account",
                                                 "default_account_cap", "max_batch"])
        c.dsn = try ledger.string("dsn") ?? c.dsn
        c.dataDirectory = try ledger.string("data_dir") ?? c.dataDirectory
        c.holdExpirySeconds = try ledger.int("hold_expiry_seconds", 1...31_536_000) ?? c.holdExpirySeconds
        c.defaultAccount = try ledger.string("default_account") ?? c.defaultAccount
        c.defaultAccountCap = try ledger.money("default_account_cap") ?? c.defaultAccountCap
        c.maxBatch = try ledger.int("max_batch", 1...10_000) ?? c.maxBatch

        var routing = try Section(doc, "routing", ["default_session_budget", "default_horizon", "lambda",
                                                   "exploration", "cold_start_exploration", "default_prompt_tokens", "fallback_model",
                                                   "seed", "feature_dimension", "policy_file"])
        c.defaultSessionBudget = try routing.money("default_session_budget") ?? c.defaultSessionBudget
        c.defaultHorizon = try routing.int("default_horizon", 1...Limits.maxHorizon) ?? c.defaultHorizon
        c.lambda = try routing.double("lambda", 0...Limits.maxLambda) ?? c.lambda
        c.exploration = try routing.double("exploration", 0...1) ?? c.exploration
        c.coldStartExploration = try routing.double("cold_start_exploration", 0...1) ?? c.coldStartExploration
        c.defaultPromptTokens = try routing.int("default_prompt_tokens", 1...Limits.maxTokens) ?? c.defaultPromptTokens
        c.fallbackModel = try routing.string("fallback_model").flatMap { $0.isEmpty ? nil : $0 }
        c.seed = UInt64(try routing.int("seed", 0...Int.max) ?? Int(c.seed))
        c.featureDimension = try routing.int("feature_dimension", 8...Limits.maxFeatures) ?? c.featureDimension
        c.policyFile = try routing.string("policy_file").flatMap { $0.isEmpty ? nil : $0 }

        var refit = try Section(doc, "refit", ["policy_dir", "min_sessions", "held_out_share", "steps", "tolerance",
                                               "max_bankruptcy_rate", "min_effective_sessions", "lambda", "alpha"])
        c.refit.policyDirectory = try refit.string("policy_dir").flatMap { $0.isEmpty ? nil : $0 }
        c.refit.minSessions = try refit.int("min_sessions", 10...100_000_000) ?? c.refit.minSessions
        c.refit.heldOutShare = try refit.double("held_out_share", 0.05...0.95) ?? c.refit.heldOutShare
        c.refit.steps = try refit.int("steps", 1...100_000_000) ?? c.refit.steps
        c.refit.tolerance = try refit.double("tolerance", 0...1) ?? c.refit.tolerance
        c.refit.maxBankruptcyRate = try refit.double("max_bankruptcy_rate", 0...1) ?? c.refit.maxBankruptcyRate
        c.refit.minEffectiveSessions = try refit.double("min_effective_sessions", 1...1_000_000) ?? c.refit.minEffectiveSessions
        c.refit.lambda = try refit.double("lambda", 0...Limits.maxLambda)
        c.refit.alpha = try refit.double("alpha", 0...100) ?? c.refit.alpha

        guard case .array(let models)? = doc["models"] else {
            throw ConfigError(key: "models", "at least one [[models]] entry is needed")
        }
        var list: [ModelSpec] = []
        for (n, entry) in models.enumerated() {
            guard case .table(let t) = entry else { throw ConfigError(key: "models[\(n)]", "must be a table") }
            var m = try Section(t, path: "models[\(n)]", ["name", "input_price", "output_price",
                                                          "max_output_tokens", "quality", "task_quality"])
            guard let name = try m.string("name"), !name.isEmpty, name.utf8.count <= 128,
                  !name.contains(where: { $0 == " " || $0 == "=" || $0 == "%" })
            else {
                throw ConfigError(key: "models[\(n)].name", "needs a name of 1 to 128 bytes without spaces, '=' or '%'")
            }
            guard let inPrice = try m.money("input_price") else {
                throw ConfigError(key: "models[\(n)].input_price", "is required (micro-units per million tokens)")
            }
            guard let outPrice = try m.money("output_price") else {
                throw ConfigError(key: "models[\(n)].output_price", "is required (micro-units per million tokens)")
            }
            guard let maxOut = try m.int("max_output_tokens", 1...Limits.maxTokens) else {
                throw ConfigError(key: "models[\(n)].max_output_tokens", "is required")
            }
            let quality = try m.double("quality", 0...1) ?? 0.5
            var perTask: [String: Double] = [:]
            if let tq = m.values.removeValue(forKey: "task_quality") {
                guard case .table(let tt) = tq else {
                    throw ConfigError(key: "models[\(n)].task_quality", "must be an inline table of task = quality")
                }
                for (task, v) in tt {
                    let q: Double
                    switch v {
                    case .float(let d): q = d
                    case .integer(let i): q = Double(i)
                    default: throw ConfigError(key: "models[\(n)].task_quality.\(task)", "must be a number")
                    }
                    guard q >= 0, q <= 1 else {
                        throw ConfigError(key: "models[\(n)].task_quality.\(task)", "must be in [0,1]")
                    }
                    perTask[task] = q
                }
            }
            if list.contains(where: { $0.name == name }) {
                throw ConfigError(key: "models[\(n)].name", "duplicate model \(name)")
            }
            list.append(ModelSpec(name: name, inputPrice: inPrice, outputPrice: outPrice, maxOutputTokens: maxOut,
                                  quality: quality, taskQuality: perTask))
        }
        guard !list.isEmpty else { throw ConfigError(key: "models", "at least one [[models]] entry is needed") }
        c.pool = ModelPool(models: list)
        if let f = c.fallbackModel, !list.contains(where: { $0.name == f }) {
            throw ConfigError(key: "routing.fallback_model", "names no configured model: \(f)")
        }
        return c
    }

    /// What `seqroute refit` does (SPEC 6; docs/LEARNING.md has the promotion rule).
    public struct RefitSettings: Sendable, Equatable {
        /// Where trained policies are written, one file per version; nil: `<data_dir>/policies`.
        public var policyDirectory: String?
        /// Complete logged sessions needed before a refit trains at all.
        public var minSessions = 500
        /// Share of sessions kept out of training for the off-policy evaluation.
        public var heldOutShare = 0.25
        /// CQL gradient steps.
        public var steps = 20_000
        /// The candidate may be at most this much worse (per-turn objective, lower 95% bound).
        public var tolerance = 0.01
        /// The candidate's estimated bankruptcy rate may exceed the active policy's only up to this.
        public var maxBankruptcyRate = 0.01
        /// Below this effective sample size the evaluation is too uncertain to promote.
        public var minEffectiveSessions = 30.0
        /// Weight of CQL's conservative term: higher keeps the candidate closer to the logged choices.
        public var alpha = 0.05
        /// λ of the objective the candidate is judged by; nil: [routing] lambda.
        public var lambda: Double?
        public init() {}
    }

    /// A group name or a numeric gid, resolved now, so that a typo is refused at load time.
    static func groupID(_ name: String, key: String) throws -> UInt32 {
        if let gid = UInt32(name) { return gid }
        guard let group = getgrnam(name) else { throw ConfigError(key: key, "no group named \(name)") }
        return group.pointee.gr_gid
    }

    /// One section's values; reading a key removes it, so leftover keys are reported as unknown.
    private struct Section {
        var values: [String: TOMLValue]
        let path: String

        init(_ doc: [String: TOMLValue], _ name: String, _ allowed: Set<String>) throws {
            switch doc[name] {
            case nil: self.init([:], path: name, allowed: allowed)
            case .table(let t)?: try self.init(t, path: name, allowed)
            case let v?: throw ConfigError(key: name, "must be a table, found \(v.typeName)")
            }
        }
        init(_ values: [String: TOMLValue], path: String, _ allowed: Set<String>) throws {
            for k in values.keys where !allowed.contains(k) {
                throw ConfigError(key: "\(path).\(k)", "unknown key")
            }
            self.init(values, path: path, allowed: allowed)
        }
        private init(_ values: [String: TOMLValue], path: String, allowed: Set<String>) {
            self.values = values
            self.path = path
        }

        mutating func string(_ k: String) throws -> String? {
            guard let v = values.removeValue(forKey: k) else { return nil }
            guard case .string(let s) = v else { throw ConfigError(key: "\(path).\(k)", "must be a string, found \(v.typeName)") }
            return s
        }
        mutating func int(_ k: String, _ range: ClosedRange<Int>) throws -> Int? {
            guard let v = values.removeValue(forKey: k) else { return nil }
            guard case .integer(let i) = v, let n = Int(exactly: i), range.contains(n) else {
                throw ConfigError(key: "\(path).\(k)", "must be an integer in \(range.lowerBound)...\(range.upperBound)")
            }
            return n
        }
        mutating func list(_ k: String) throws -> [TOMLValue] {
            guard let v = values.removeValue(forKey: k) else { return [] }
            guard case .array(let items) = v else { throw ConfigError(key: "\(path).\(k)", "must be a list, found \(v.typeName)") }
            return items
        }
        mutating func money(_ k: String) throws -> Int64? {
            guard let v = values.removeValue(forKey: k) else { return nil }
            guard case .integer(let i) = v, i >= 0, i <= Limits.maxMoney else {
                throw ConfigError(key: "\(path).\(k)", "must be a non-negative integer count of micro-units")
            }
            return i
        }
        mutating func double(_ k: String, _ range: ClosedRange<Double>) throws -> Double? {
            guard let v = values.removeValue(forKey: k) else { return nil }
            let d: Double
            switch v {
            case .float(let x): d = x
            case .integer(let x): d = Double(x)
            default: throw ConfigError(key: "\(path).\(k)", "must be a number")
            }
            guard range.contains(d) else {
                throw ConfigError(key: "\(path).\(k)", "must be in [\(range.lowerBound), \(range.upperBound)]")
            }
            return d
        }
    }
}
