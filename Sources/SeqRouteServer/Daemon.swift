// `seqroute serve`: wires the configuration, the ledger, the router and the socket together,
// speaks sd_notify, and shuts down cleanly on SIGTERM.

import Foundation
import SeqRouteCore
import SeqRouteLedger

/// Logs go to stderr with journald priority prefixes (<3> error ... <7> debug).
/// One record per line: a message's own line breaks (libpq's have some) become spaces.
public func logLine(_ s: String) {
    let flat = s.split(whereSeparator: { $0.isNewline }).map { $0.trimmingCharacters(in: .whitespaces) }
        .joined(separator: " ")
    FileHandle.standardError.write(Data((flat + "\n").utf8))
}

public struct DaemonOptions: Sendable {
    public var configPath: String?
    public var dsn: String?
    public var socketPath: String?
    public var dataDirectory: String?
    public var sqlDirectory: String?
    public init(configPath: String?, dsn: String?, socketPath: String?, dataDirectory: String?, sqlDirectory: String?) {
        self.configPath = configPath
        self.dsn = dsn
        self.socketPath = socketPath
        self.dataDirectory = dataDirectory
        self.sqlDirectory = sqlDirectory
    }

    /// Reads the configuration file and lays the command-line flags over it.
    public func loadConfiguration() throws -> Configuration {
        var c: Configuration
        if let configPath {
            guard let text = try? String(contentsOfFile: configPath, encoding: .utf8) else {
                throw ConfigError(key: "", "cannot read configuration file \(configPath)")
            }
            c = try Configuration.parse(text)
        } else {
            throw ConfigError(key: "", "no configuration file given (--config); see config/seqroute.toml")
        }
        if let dsn { c.dsn = dsn }
        if let socketPath { c.socketPath = socketPath }
        if let dataDirectory { c.dataDirectory = dataDirectory }
        return c
    }
}

public enum Daemon {
    /// Runs until SIGTERM or SIGINT; returns the exit status.
    /// One descriptor per connection: the soft limit (often 1,024) goes up to the hard one
    /// (LimitNOFILE= under systemd), so that `max_connections` is what limits connections.
    static func raiseDescriptorLimit() {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0, limit.rlim_cur < limit.rlim_max else { return }
        limit.rlim_cur = limit.rlim_max
        _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
    }

    public static func serve(_ options: DaemonOptions) -> Int32 {
        // Taken first, before any child process is started.
        let passedSocket = SocketServer.passedSocket()
        raiseDescriptorLimit()
        let config: Configuration
        do { config = try options.loadConfiguration() } catch {
            logLine("<3>bad configuration: \(error)")
            return 78  // EX_CONFIG
        }

        var embedded: EmbeddedPostgres?
        var dsn = config.dsn
        if dsn.isEmpty {
            do {
                let pg = try EmbeddedPostgres(directory: config.dataDirectory)
                try pg.start(log: logLine)
                embedded = pg
                dsn = pg.dsn
            } catch {
                logLine("<3>cannot start the embedded PostgreSQL cluster: \(error)")
                return 69  // EX_UNAVAILABLE
            }
        }
        defer { embedded?.stop() }

        do {
            let db = try PGConnection(dsn: dsn)
            let applied = try Migrations.apply(Migrations.load(from: Migrations.locate(options.sqlDirectory)), on: db)
            if !applied.isEmpty { logLine("<6>applied migrations: \(applied.joined(separator: ", "))") }
            try db.ensureAccount(config.defaultAccount, cap: config.defaultAccountCap)
            try db.registerPool(id: config.pool.identity, models: config.pool.names)
        } catch {
            logLine("<3>ledger not ready: \(error)")
            return 69
        }

        let metrics = DaemonMetrics()
        let committer = GroupCommitter(dsn: dsn, maxBatch: config.maxBatch, holdExpirySeconds: config.holdExpirySeconds,
                                       log: logLine, onBatch: { metrics.recordBatch($0) })
        do { try committer.start() } catch {
            logLine("<3>ledger unreachable: \(error)")
            return 69
        }

        let reloader: @Sendable () throws -> ActiveSetup = {
            let next = try options.loadConfiguration()
            // Decisions record the pool and the feature vectors; neither may change under them.
            guard next.pool.identity == config.pool.identity else {
                throw ConfigError(key: "models", "the model pool (names or prices) changed; a new pool needs a restart")
            }
            guard next.featureDimension == config.featureDimension else {
                throw ConfigError(key: "routing.feature_dimension", "changed; a new feature dimension needs a restart")
            }
            // What the running sockets and the ledger connection were made with stays until a restart.
            let fixed: [(String, Bool)] = [
                ("server.socket", next.socketPath != config.socketPath), ("server.socket_mode", next.socketMode != config.socketMode),
                ("server.socket_group", next.socketGroup != config.socketGroup),
                ("server.max_line_bytes", next.maxLineBytes != config.maxLineBytes),
                ("server.max_connections", next.maxConnections != config.maxConnections),
                ("server.allowed_uids", next.allowedUIDs != config.allowedUIDs),
                ("server.allowed_groups", next.allowedGIDs != config.allowedGIDs),
                ("server.metrics_socket", next.metricsSocket != config.metricsSocket),
                ("server.metrics_port", next.metricsPort != config.metricsPort), ("ledger.dsn", next.dsn != config.dsn),
                ("ledger.data_dir", next.dataDirectory != config.dataDirectory),
                ("ledger.hold_expiry_seconds", next.holdExpirySeconds != config.holdExpirySeconds),
                ("ledger.max_batch", next.maxBatch != config.maxBatch),
                ("ledger.default_account_cap", next.defaultAccountCap != config.defaultAccountCap),
                ("routing.seed", next.seed != config.seed),
            ]
            let changed = fixed.filter(\.1).map(\.0)
            if !changed.isEmpty {
                logLine("<4>reload: \(changed.joined(separator: ", ")) changed; these take effect at the next restart")
            }
            return try ActiveSetup(configuration: next)
        }
        let setup: ActiveSetup
        do { setup = try ActiveSetup(configuration: config) } catch {
            logLine("<3>cannot load the policy: \(error)")
            committer.stop()
            return 78
        }
        let router = Router(setup: setup, committer: committer, reloader: reloader, metrics: metrics)
        let metricsServer = MetricsServer()
        if config.metricsSocket != nil || config.metricsPort != nil {
            let ledgerDSN = dsn
            do {
                try metricsServer.start(socketPath: config.metricsSocket, port: config.metricsPort) {
                    metrics.scrape(committer: committer, dsn: ledgerDSN)
                }
            } catch {
                logLine("<3>cannot serve metrics on \(config.metricsSocket ?? "127.0.0.1:\(config.metricsPort ?? 0)"): \(error)")
                committer.stop()
                return 69
            }
        }
        let server = SocketServer(router: router, path: config.socketPath)
        do { try server.start(mode: config.socketMode, socketGroup: config.socketGroup, maxLineBytes: config.maxLineBytes,
                             maxConnections: config.maxConnections,
                             peers: PeerPolicy(uids: config.allowedUIDs, gids: config.allowedGIDs), passed: passedSocket) } catch {
            logLine("<3>cannot listen on \(config.socketPath): \(error)")
            committer.stop()
            return 69
        }
        let listening = server.adopted ? "the socket passed by systemd" : config.socketPath
        logLine("<6>seqroute listening on \(listening), policy \(router.current.policy.version), pool of \(config.pool.count) models")
        SystemdNotifier.notify("READY=1\nSTATUS=listening on \(config.socketPath)")

        let done = DispatchSemaphore(value: 0)
        let signals = DispatchQueue(label: "seqroute-signals")
        var sources: [DispatchSourceProtocol] = []
        for sig in [SIGTERM, SIGINT] {
            signal(sig, SIG_IGN)
            let s = DispatchSource.makeSignalSource(signal: sig, queue: signals)
            s.setEventHandler { done.signal() }
            s.resume()
            sources.append(s)
        }
        signal(SIGHUP, SIG_IGN)
        let hup = DispatchSource.makeSignalSource(signal: SIGHUP, queue: signals)
        hup.setEventHandler {
            Task { _ = await router.answer(line: Array("RELOAD".utf8)) }
        }
        hup.resume()
        sources.append(hup)

        // WatchdogSec=: systemd sets WATCHDOG_USEC; ping at half that interval. A ledger outage
        // does not stop the pings: the daemon reconnects by itself, a restart would not help.
        let env = ProcessInfo.processInfo.environment
        let forUs = env["WATCHDOG_PID"].map { $0 == String(getpid()) } ?? true
        if forUs, let usec = env["WATCHDOG_USEC"].flatMap({ UInt64($0) }), usec > 0 {
            let timer = DispatchSource.makeTimerSource(queue: signals)
            timer.schedule(deadline: .now(), repeating: .microseconds(Int(usec / 2)))
            timer.setEventHandler { SystemdNotifier.notify("WATCHDOG=1") }
            timer.resume()
            sources.append(timer)
        }

        done.wait()
        logLine("<6>shutting down: finishing in-flight requests")
        SystemdNotifier.notify("STOPPING=1")
        server.shutdown()
        metricsServer.stop()
        committer.stop()
        logLine("<6>stopped")
        return 0
    }
}
