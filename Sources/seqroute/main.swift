// The `seqroute` command: a thin shell over the library targets.

import ArgumentParser
import Foundation
import SeqRouteCore
import SeqRouteLearning
import SeqRouteLedger
import SeqRouteServer

struct SeqRoute: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "seqroute",
        abstract: "Budget-aware LLM routing daemon with a PostgreSQL ledger.",
        subcommands: [Serve.self, Migrate.self, Ctl.self, Status.self, Account.self, Ledger.self, Report.self, LoadGen.self, Import.self, Bench.self, Refit.self,
                      Policy.self, Simulate.self])
}

/// Where the ledger is: --dsn, else the config file's dsn, else the embedded cluster.
struct LedgerOptions: ParsableArguments {
    @Option(help: "libpq connection string of the ledger (default: the config file's, else the embedded cluster)")
    var dsn: String?
    @Option(help: "Configuration file (TOML).")
    var config: String?
    @Option(help: "Folder of the embedded PostgreSQL cluster (used when no DSN is given).")
    var dataDir: String?

    /// Opens the ledger; starts the embedded cluster when no DSN is configured. The caller
    /// stops the returned cluster, if any, when done.
    func connect() throws -> (PGConnection, EmbeddedPostgres?) {
        guard let config else { return try openLedger(dsn: dsn ?? "", dataDirectory: dataDir ?? Configuration().dataDirectory) }
        let c = try DaemonOptions(configPath: config, dsn: dsn, socketPath: nil, dataDirectory: dataDir,
                                  sqlDirectory: nil).loadConfiguration()
        return try openLedger(dsn: c.dsn, dataDirectory: c.dataDirectory)
    }
}

/// The daemon's whole setup as the configuration file gives it (the commands that work beside a
/// running daemon: refit, policy, simulate), with flags laid over it.
struct DeploymentOptions: ParsableArguments {
    @Option(help: "Configuration file (TOML).") var config: String = "/etc/seqroute/seqroute.toml"
    @Option(help: "libpq connection string; overrides the file. Empty: the embedded cluster.") var dsn: String?
    @Option(help: "Folder of the embedded PostgreSQL cluster; overrides the file.") var dataDir: String?
    @Option(help: "The daemon's socket; overrides the file.") var socket: String?

    func configuration() throws -> Configuration {
        try DaemonOptions(configPath: config, dsn: dsn, socketPath: socket, dataDirectory: dataDir,
                          sqlDirectory: nil).loadConfiguration()
    }

    /// The configuration and its ledger; the caller stops the embedded cluster, if one was started.
    func open() throws -> (Configuration, PGConnection, EmbeddedPostgres?) {
        let c = try configuration()
        let (db, pg) = try openLedger(dsn: c.dsn, dataDirectory: c.dataDirectory)
        return (c, db, pg)
    }
}

/// A libpq connection to `dsn`, or to the embedded cluster in `dataDirectory` when `dsn` is empty.
func openLedger(dsn: String, dataDirectory: String) throws -> (PGConnection, EmbeddedPostgres?) {
    if !dsn.isEmpty { return (try PGConnection(dsn: dsn), nil) }
    let pg = try EmbeddedPostgres(directory: dataDirectory)
    try pg.start(log: logLine)
    return (try PGConnection(dsn: pg.dsn), pg)
}

struct Serve: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run the daemon (Type=notify under systemd).")
    @Option(help: "Configuration file (TOML).") var config: String = "/etc/seqroute/seqroute.toml"
    @Option(help: "libpq connection string; overrides the file. Empty: the embedded cluster.") var dsn: String?
    @Option(help: "Socket path; overrides the file.") var socket: String?
    @Option(help: "Folder of the embedded PostgreSQL cluster; overrides the file.") var dataDir: String?
    @Option(help: "Folder of the SQL migrations.") var sqlDir: String?

    func run() throws {
        let status = Daemon.serve(DaemonOptions(configPath: config, dsn: dsn, socketPath: socket, dataDirectory: dataDir,
                                                sqlDirectory: sqlDir))
        throw ExitCode(status)
    }
}

struct Migrate: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Apply the SQL migrations that have not run yet.")
    @OptionGroup var ledger: LedgerOptions
    @Option(help: "Folder of the SQL migrations.") var sqlDir: String?

    func run() throws {
        let (db, pg) = try ledger.connect()
        defer { pg?.stop() }
        let applied = try Migrations.apply(Migrations.load(from: Migrations.locate(sqlDir)), on: db)
        print(applied.isEmpty ? "up to date" : "applied \(applied.joined(separator: ", "))")
    }
}

struct Ctl: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Send one protocol line to the daemon and print the answer.",
        discussion: "Example: seqroute ctl --socket /run/seqroute/seqroute.sock OPEN s1 budget=50000")
    @Option(help: "Socket path.") var socket: String = "/run/seqroute/seqroute.sock"
    @Argument(parsing: .captureForPassthrough, help: "The request's words.") var words: [String]

    func run() throws {
        guard !words.isEmpty else { throw ValidationError("give a request, for example PING") }
        let answer = try LineClient(path: socket).request(words.joined(separator: " "))
        print(answer)
        if answer.hasPrefix("ERR") { throw ExitCode(1) }
    }
}

struct Status: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show the daemon's figures (what STATS answers), one per line, for a person at a terminal.",
        discussion: "Exits 1 when the daemon cannot be reached or reports its ledger down.")
    @Option(help: "Socket path.") var socket: String = "/run/seqroute/seqroute.sock"

    static let labels: [(String, String)] = [
        ("policy", "policy in force"), ("ledger", "ledger"), ("requests", "requests answered"),
        ("decisions", "ROUTE decisions"), ("errors", "ERR answers"), ("route_p50_us", "ROUTE latency p50 (µs)"),
        ("route_p99_us", "ROUTE latency p99 (µs)"), ("route_p999_us", "ROUTE latency p99.9 (µs)"),
        ("batches", "ledger commits (batches)"), ("mean_batch", "requests per commit, mean"),
        ("largest_batch", "requests per commit, largest"), ("expired_holds", "holds expired"),
        ("reconnects", "ledger reconnects"), ("sessions_cached", "sessions cached"),
    ]

    func run() throws {
        let answer = try LineClient(path: socket).request("STATS")
        guard answer.hasPrefix("OK") else {
            print(answer)
            throw ExitCode(1)
        }
        let fields = LineClient.fields(answer)
        let width = Status.labels.map(\.1.count).max() ?? 0
        for (key, label) in Status.labels {
            guard let value = fields[key] else { continue }
            print(label.padding(toLength: width, withPad: " ", startingAt: 0) + "  " + value)
        }
        for key in fields.keys.sorted() where !Status.labels.contains(where: { $0.0 == key }) {
            print(key.padding(toLength: width, withPad: " ", startingAt: 0) + "  " + fields[key]!)
        }
        if fields["ledger"] != "up" { throw ExitCode(1) }
    }
}

struct Account: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Create, change or show an account's global budget.",
                                                    subcommands: [Set.self, Show.self])

    struct Set: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create the account, or change its cap or its budget period.",
            discussion: """
                With --period daily, weekly or monthly the cap applies to each period, in the account's time zone \
                (--time-zone, an IANA name such as Europe/Paris; default UTC): a new period starts from zero spend. \
                Example: seqroute account set acme --cap 500000000 --period monthly --time-zone America/New_York
                """)
        @Argument(help: "Account id.") var id: String
        @Option(help: "The account's budget cap in micro-units (per period when it has one).") var cap: Int64?
        @Option(help: "Budget period: none, daily, weekly (from Monday) or monthly.") var period: String?
        @Option(help: "Time zone of the periods (IANA name).") var timeZone: String?
        @OptionGroup var ledger: LedgerOptions

        func validate() throws {
            if let cap { guard cap >= 0, cap <= Limits.maxMoney else { throw ValidationError("--cap must be a non-negative integer count of micro-units") } }
            guard !id.isEmpty, id.utf8.count <= Limits.maxIdentifierBytes else { throw ValidationError("account id must be 1 to 128 bytes") }
            if let period, !["none", "daily", "weekly", "monthly"].contains(period) {
                throw ValidationError("--period must be none, daily, weekly or monthly")
            }
            guard cap != nil || period != nil || timeZone != nil else { throw ValidationError("give --cap, --period or --time-zone") }
        }

        func run() throws {
            let (db, pg) = try ledger.connect()
            defer { pg?.stop() }
            if let cap {
                try db.setAccount(id, cap: cap)
            } else if try db.account(id) == nil {
                throw ValidationError("account \(id) does not exist: a new account needs --cap")
            }
            if period != nil || timeZone != nil {
                let current = try db.query("SELECT period, time_zone FROM accounts WHERE id = $1", [id])[0]
                do {
                    try db.setPeriod(id, period: period ?? current[0] ?? "none", timeZone: timeZone ?? current[1] ?? "UTC")
                } catch let e as PGError {
                    FileHandle.standardError.write(Data("refused: \(e.message)\n".utf8))
                    throw ExitCode(1)
                }
            }
            print(try db.account(id)!.line)
        }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print cap=<micros> spent=<micros> held=<micros>.")
        @Argument(help: "Account id.") var id: String
        @OptionGroup var ledger: LedgerOptions

        func run() throws {
            let (db, pg) = try ledger.connect()
            defer { pg?.stop() }
            guard let figures = try db.account(id) else {
                FileHandle.standardError.write(Data("no account \(id)\n".utf8))
                throw ExitCode(1)
            }
            print(figures.line)
        }
    }
}

struct Ledger: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Corrections to the ledger, as new entries.",
                                                    subcommands: [Adjust.self])

    struct Adjust: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Correct a spend entry by a signed amount: a new `adjustment` entry that references it.",
            discussion: """
                Nothing is edited: the correction is appended, and the session's and the account's spent move by the \
                amount. Example, giving back 1,200 micro-units charged by capture 4711: \
                seqroute ledger adjust 4711 --amount -1200 --reason "provider refund, ticket 88"
                """)
        @Argument(help: "Id of the ledger entry to correct (a capture, expiry, overrun or adjustment).") var entry: Int64
        @Option(parsing: .unconditional, help: "Signed micro-units: negative gives money back.", transform: { s in
            guard let v = Int64(s) else { throw ValidationError("--amount must be an integer count of micro-units") }
            return v
        }) var amount: Int64
        @Option(help: "Why: kept with the entry for the auditor.") var reason: String
        @OptionGroup var ledger: LedgerOptions

        func validate() throws {
            guard amount != 0, abs(amount) <= Limits.maxMoney else {
                throw ValidationError("--amount must be a non-zero count of micro-units")
            }
            guard !reason.trimmingCharacters(in: .whitespaces).isEmpty else { throw ValidationError("--reason is required") }
        }

        func run() throws {
            let (db, pg) = try ledger.connect()
            defer { pg?.stop() }
            do {
                let r = try db.adjust(entry: entry, amount: amount, reason: reason)
                print("adjustment=\(r.id) corrects=\(entry) amount=\(amount) session_spent=\(r.sessionSpent) account_spent=\(r.accountSpent)")
            } catch let e as PGError {
                FileHandle.standardError.write(Data("refused: \(e.message)\n".utf8))
                throw ExitCode(1)
            }
        }
    }
}

struct Report: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Spend, decisions and quality over a range of days, as CSV or as one self-contained HTML page.",
        discussion: """
            CSV: one row per day, account, model and policy version (spent_micros, decisions, mean_quality). HTML: the \
            same with charts of spend per model over time, budget burn-down per account, and quality against cost per \
            policy version; it needs no network to display. Days are UTC dates; --to is excluded.
            """)
    @OptionGroup var ledger: LedgerOptions
    @Option(help: "First day (YYYY-MM-DD, UTC).") var from: String
    @Option(help: "Day after the last (YYYY-MM-DD, UTC).") var to: String
    @Option(help: "Only this account.") var account: String?
    @Option(help: "csv or html.") var format: String = "csv"
    @Option(help: "Write to this file (default: standard output).") var out: String?

    func validate() throws {
        let day = /^\d{4}-\d{2}-\d{2}$/
        guard from.wholeMatch(of: day) != nil, to.wholeMatch(of: day) != nil, from < to else {
            throw ValidationError("--from and --to must be dates YYYY-MM-DD with --from before --to")
        }
        guard ["csv", "html"].contains(format) else { throw ValidationError("--format must be csv or html") }
    }

    func run() throws {
        let (db, pg) = try ledger.connect()
        defer { pg?.stop() }
        let report = FinanceReport(from: from, to: to, account: account,
                                   rows: try db.reportRows(from: from, to: to, account: account),
                                   accounts: try db.reportAccounts(account: account))
        let text = format == "csv" ? report.csv : report.htmlPage
        if let out {
            try Data(text.utf8).write(to: URL(fileURLWithPath: out), options: .atomic)
        } else {
            print(text, terminator: "")
        }
    }
}

struct LoadGen: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "loadgen",
        abstract: "Run whole sessions against a daemon; print decisions per second and ROUTE latency.")
    @Option(help: "Socket path; give it once per daemon to spread the connections over several.")
    var socket: [String] = ["/run/seqroute/seqroute.sock"]
    @Option(help: "Concurrent connections.") var connections: Int = 64
    @Option(help: "Sessions in all.") var sessions: Int = 2_000
    @Option(help: "Turns per session.") var turns: Int = 8
    @Option(help: "Budget of each session in micro-units.") var budget: Int64 = 1_000_000
    @Option(help: "Account of the sessions (default: the daemon's default account).") var account: String?
    @Option(help: "Target decisions per second over all connections (0: as fast as possible).") var rate: Double = 0
    @Option(help: "Seed.") var seed: UInt64 = 1
    @Option(help: "A libpq connection string of the ledger: sample --account's spent + held against its cap all through the run.")
    var watchDsn: String?
    @Option(help: "Seconds a request may go unanswered before its connection counts an error and is closed.")
    var timeout: Int = 30
    @Option(help: "Bytes of prompt text on every ROUTE (text=), so that the featurizer works; 0 sends tokens= instead.")
    var textBytes: Int = 0

    func validate() throws {
        if watchDsn != nil && account == nil { throw ValidationError("--watch-dsn needs --account") }
        guard connections > 0, sessions > 0, turns > 0, budget > 0, rate >= 0 else {
            throw ValidationError("connections, sessions, turns and budget must be positive; rate non-negative")
        }
        guard (0...16_000).contains(textBytes) else { throw ValidationError("--text-bytes must be 0 to 16000") }
        guard (1...LoadOptions.maxAnswerTimeoutSeconds).contains(timeout) else {
            throw ValidationError("--timeout must be 1 to \(LoadOptions.maxAnswerTimeoutSeconds) seconds")
        }
    }

    func run() throws {
        let report = try LoadGenerator.run(LoadOptions(socketPaths: socket, connections: connections, sessions: sessions,
                                                       turns: turns, budget: budget, account: account, rate: rate,
                                                       seed: seed, watchDSN: watchDsn, answerTimeoutSeconds: timeout,
                                                       textBytes: textBytes))
        print(report.summary)
        for e in report.firstErrors.prefix(5) { print("error: \(e)") }
        if report.errors > 0 || (report.watch?.overCap ?? 0) > 0 { throw ExitCode(1) }
    }
}

struct Import: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Import router data into canonical query tables (train.jsonl and test.jsonl).",
        discussion: """
            routerbench <folder>: the RouterBench CSVs (<name>_train.csv and <name>_test.csv; the source's split is kept).
            routellm <folder>: RouteLLM's MMLU, GSM8K and MT-Bench results (a seeded 80/20 split); \
            MT-Bench question texts come from --mt-bench-questions.
            """)
    @Argument(help: "routerbench or routellm") var format: String
    @Argument(help: "The source folder.") var source: String
    @Option(help: "Output folder.") var out: String
    @Option(help: "Folder with MT-Bench's question.jsonl (routellm only; default: <source>/../mt_bench_questions).")
    var mtBenchQuestions: String?

    func run() throws {
        let src = URL(fileURLWithPath: source)
        let tables: ImportedTables
        switch format {
        case "routerbench": tables = try RouterBenchImporter(directory: src).load()
        case "routellm":
            let questions = mtBenchQuestions.map { URL(fileURLWithPath: $0) }
                ?? src.deletingLastPathComponent().appendingPathComponent("mt_bench_questions")
            tables = try RouteLLMImporter(directory: src, mtBenchQuestionsDirectory: questions).load()
        default: throw ValidationError("unknown format \(format): use routerbench or routellm")
        }
        let dir = URL(fileURLWithPath: out)
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        try tables.train.write(to: dir.appendingPathComponent("train.jsonl"))
        try tables.test.write(to: dir.appendingPathComponent("test.jsonl"))
        for n in tables.notes { print(n) }
        print("train.jsonl: \(tables.train.records.count) queries, test.jsonl: \(tables.test.records.count) queries, models: \(tables.train.models.joined(separator: ", "))")
    }
}

extension QHead: ExpressibleByArgument {}

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run every policy on sessions built from canonical query tables; write bench.json, bench.md, frontier.svg.")
    @Option(help: "Training query table (JSONL).") var train: String
    @Option(help: "Test query table (JSONL).") var test: String
    @Option(help: "Output folder.") var out: String
    @Flag(help: "A small run (about a minute) for tests and demos.") var quick = false
    @Option(help: "CQL gradient steps (default 60000, quick 3000).") var steps: Int?
    @Option(help: "Seed.") var seed: UInt64 = 1
    @Flag(help: "Also give the learned policies each query's text features (off: task label and budget state only).")
    var queryFeatures = false
    @Flag(help: "Do not give the learned policies the per-task training means of each model.")
    var noTaskPriors = false
    @Option(help: "CQL's conservative weight α, on the reward scale (default 0.01).") var alpha: Float?
    @Option(help: "How the CQL networks' outputs make Q: shadow-price+stakes, shadow-price, shadow-price+advantage or per-action.")
    var head: QHead = .shadowPriceAndStakes

    func validate() throws {
        if let steps, steps < 1 { throw ValidationError("--steps must be at least 1") }
        if let alpha, !(alpha >= 0 && alpha.isFinite) { throw ValidationError("--alpha must be a finite number ≥ 0") }
    }

    func run() throws {
        var c = quick ? BenchConfiguration.quick : BenchConfiguration()
        if let steps { c.cql.steps = steps }
        if let alpha { c.cql.alpha = alpha }
        c.queryFeatures = queryFeatures
        c.taskPriors = !noTaskPriors
        c.cql.head = head
        c.seed = seed
        let started = Date()
        let log: @Sendable (String) -> Void = { line in
            FileHandle.standardError.write(Data(String(format: "[%6.1fs] %@\n", Date().timeIntervalSince(started), line).utf8))
        }
        log("reading \(train) and \(test)")
        let trainTable = try QueryTable.read(from: URL(fileURLWithPath: train))
        let testTable = try QueryTable.read(from: URL(fileURLWithPath: test))
        let (output, policy) = try SeqRouteLearning.Bench.run(train: trainTable, test: testTable, configuration: c, progress: log)
        let dir = URL(fileURLWithPath: out)
        try BenchReport.write(output, to: dir)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        try encoder.encode(policy).write(to: dir.appendingPathComponent("policy.json"), options: .atomic)
        log("wrote bench.json, bench.md, frontier.svg and policy.json to \(out)")
        for l in output.summary {
            print(String(format: "rho=%.2f pacing=%.3f/%.2f seqroute(matched λ=%@)=%@ max_q=%.3f oracle=%.3f undominated=%d (by the sweep alone %d)",
                         l.rho, l.pacing_quality, l.pacing_cost * 1000, l.matched_lambda.map { "\($0)" } ?? "-",
                         l.seqroute_quality.map { String(format: "%.3f/%.2f", $0, (l.seqroute_cost ?? 0) * 1000) } ?? "-",
                         l.seqroute_max_quality, l.oracle_quality, l.undominated_baseline_points.count,
                         l.undominated_by_sweep.count))
        }
    }
}

struct Refit: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Learn a new policy from the decision log; promote it if off-policy evaluation finds it not worse.",
        discussion: "Reads the log with COPY, applies HBR, trains CQL, evaluates against the active policy on held-out sessions, writes the policy file atomically, registers it in the ledger's policies table, and on promotion points [routing] policy_file at it and asks the daemon to RELOAD. docs/LEARNING.md states the promotion rule.")
    @OptionGroup var deployment: DeploymentOptions
    @Option(help: "Only decisions at or after this PostgreSQL timestamp.") var since: String?
    @Option(help: "CQL gradient steps (default: [refit] steps).") var steps: Int?
    @Option(help: "Seed.") var seed: UInt64 = 1

    func validate() throws {
        if let steps, steps < 1 { throw ValidationError("--steps must be at least 1") }
    }

    func run() throws {
        let (config, db, pg) = try deployment.open()
        defer { pg?.stop() }
        let report = try RefitJob.run(configuration: config, db: db, since: since, steps: steps, seed: seed,
                                      log: { logLine("<6>refit: \($0)") })
        for line in report.lines { print(line) }
    }
}

struct Policy: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List, show or activate trained policies.",
                                                    subcommands: [List.self, Show.self, Activate.self])

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Every registered policy, oldest first.")
        @OptionGroup var deployment: DeploymentOptions

        func run() throws {
            let (_, db, pg) = try deployment.open()
            defer { pg?.stop() }
            print("version\tstatus\tcreated\tsessions\tobjective\tactive_objective\tpromoted")
            for p in try db.policies() {
                let e = PolicySummary(p)
                print("\(p.version)\t\(p.status)\t\(p.createdAt)\t\(e.sessions)\t\(e.objective)\t\(e.activeObjective)\t\(e.promoted)")
            }
        }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "One policy: file, checksum, data range, training and evaluation figures.")
        @Argument(help: "Policy version.") var version: String
        @OptionGroup var deployment: DeploymentOptions

        func run() throws {
            let (_, db, pg) = try deployment.open()
            defer { pg?.stop() }
            guard let p = try db.policy(version) else {
                FileHandle.standardError.write(Data("no policy \(version)\n".utf8))
                throw ExitCode(1)
            }
            print("version: \(p.version)\nstatus: \(p.status)\ncreated: \(p.createdAt)")
            print("file: \(p.filePath ?? "-")\nsha256: \(p.sha256 ?? "-")")
            print("data: \(p.dataFrom ?? "-") to \(p.dataTo ?? "-")")
            print("training: \(p.training)\nevaluation: \(p.evaluation)")
        }
    }

    struct Activate: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Make a registered policy the active one and reload the daemon (also the rollback).")
        @Argument(help: "Policy version.") var version: String
        @OptionGroup var deployment: DeploymentOptions

        func run() throws {
            let (config, db, pg) = try deployment.open()
            defer { pg?.stop() }
            let store = PolicyStore(directory: config.policyDirectory, activeLink: config.activePolicyLink)
            do {
                print(try PolicyActivation.activate(version, db: db, store: store, socketPath: config.socketPath))
            } catch let e as PolicyActivation.Failure {
                FileHandle.standardError.write(Data("\(e)\n".utf8))
                throw ExitCode(1)
            }
        }
    }
}

/// The figures `policy list` shows, read from a registry entry's evaluation.
struct PolicySummary {
    var sessions = "-", objective = "-", activeObjective = "-", promoted = "-"

    init(_ p: PolicyEntry) {
        struct Stored: Decodable {
            var comparison: OPEComparison
            var promoted: Bool
        }
        guard let e = try? JSONDecoder().decode(Stored.self, from: Data(p.evaluation.utf8)) else { return }
        sessions = "\(e.comparison.sessions)"
        objective = String(format: "%.4f", e.comparison.candidate.objective)
        activeObjective = String(format: "%.4f", e.comparison.active.objective)
        promoted = e.promoted ? "yes" : "no"
    }
}

struct Simulate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Play simulated users against the running daemon: phase 1, refit, reload, phase 2.",
        discussion: "Sessions come from a canonical query table; each user reports the real cost and quality of the model the daemon chose. Between the phases the refit runs as `seqroute refit` does, while one connection keeps playing sessions, so that the reload happens under traffic.")
    @Option(help: "Canonical query table (JSONL) the sessions are drawn from.") var data: String
    @OptionGroup var deployment: DeploymentOptions
    @Option(help: "Sessions per phase.") var sessions: Int = 3_000
    @Option(help: "Concurrent connections.") var connections: Int = 16
    @Option(help: "Lowest budget level ρ (0: the cheapest model on every turn).") var rhoMin: Double = 0.05
    @Option(help: "Highest budget level ρ (1: the strongest model's mean cost on every turn).") var rhoMax: Double = 0.5
    @Option(help: "Account of the sessions (default: the daemon's default account).") var account: String?
    @Option(help: "λ of every session (default: the daemon's).") var lambda: Double?
    @Option(help: "CQL gradient steps of the refit (default: [refit] steps).") var steps: Int?
    @Option(help: "Seed.") var seed: UInt64 = 1
    @Flag(help: "Play one phase on the policy in force and stop (no refit, no reload).") var onePhase = false

    func validate() throws {
        guard sessions > 0, connections > 0 else { throw ValidationError("--sessions and --connections must be positive") }
        guard rhoMin >= 0, rhoMax >= rhoMin else { throw ValidationError("need 0 ≤ --rho-min ≤ --rho-max") }
        if let steps, steps < 1 { throw ValidationError("--steps must be at least 1") }
    }

    func run() throws {
        var settings = try deployment.configuration()
        if let l = lambda { settings.refit.lambda = settings.refit.lambda ?? l }  // judge candidates by the users' λ
        let config = settings
        let table = try QueryTable.read(from: URL(fileURLWithPath: data))
        let users = try UserSimulation(table: table, pool: config.pool)
        let run = String(UInt64.random(in: 0..<UInt64.max), radix: 36)
        let (rhoMin, rhoMax, account, lambda) = (rhoMin, rhoMax, account, lambda)
        @Sendable func options(_ phase: String, _ count: Int, _ seed: UInt64, _ connections: Int) -> SimulationOptions {
            SimulationOptions(socketPath: config.socketPath, sessions: count, connections: connections,
                              rho: rhoMin...rhoMax, account: account, lambda: lambda, seed: seed,
                              prefix: "sim-\(run)-\(phase)")
        }
        logLine("<6>simulate: phase 1, \(sessions) sessions")
        let phase1 = users.run(options("p1", sessions, seed, connections))
        print("phase 1: \(phase1.summary)")
        if onePhase {
            for f in phase1.firstFailures { print("failure: \(f)") }
            if phase1.failedRequests > 0 { throw ExitCode(1) }
            return
        }

        // The refit and the reload, with traffic going on.
        let (db, pg) = try openLedger(dsn: config.dsn, dataDirectory: config.dataDirectory)
        defer { pg?.stop() }
        final class Between: @unchecked Sendable {
            let lock = NSLock()
            var done = false
            var report = PhaseReport()
        }
        let between = Between()
        let filler = Thread {
            var round: UInt64 = 0
            while !between.lock.withLock({ between.done }) {
                let r = users.run(options("reload-\(round)", 4, seed &+ 1_000 &+ round, 1))
                between.lock.withLock { between.report.add(r) }
                round += 1
            }
        }
        let betweenStarted = Date()
        filler.start()
        let refit: RefitReport
        do {
            refit = try RefitJob.run(configuration: config, db: db, steps: steps, seed: seed,
                                     log: { logLine("<6>refit: \($0)") })
        } catch {
            between.lock.withLock { between.done = true }
            throw error
        }
        between.lock.withLock { between.done = true }
        while filler.isExecuting { usleep(10_000) }
        for line in refit.lines { print("refit: \(line)") }
        var during = between.lock.withLock { between.report }
        during.seconds = Date().timeIntervalSince(betweenStarted)
        print("during refit and reload: \(during.summary)")

        logLine("<6>simulate: phase 2, \(sessions) sessions")
        let phase2 = users.run(options("p2", sessions, seed &+ 2, connections))
        print("phase 2: \(phase2.summary)")
        let failed = phase1.failedRequests + during.failedRequests + phase2.failedRequests
        for f in (phase1.firstFailures + during.firstFailures + phase2.firstFailures).prefix(5) { print("failure: \(f)") }
        print(String(format: "phase 2 vs phase 1: quality %+.4f, cost per session %+.2f%%, bankruptcy %.4f -> %.4f, failed requests %d",
                     phase2.quality - phase1.quality,
                     phase1.costUSDPerSession > 0 ? 100 * (phase2.costUSDPerSession / phase1.costUSDPerSession - 1) : 0,
                     phase1.bankruptcyRate, phase2.bankruptcyRate, failed))
        if failed > 0 { throw ExitCode(1) }
    }
}

SeqRoute.main()
