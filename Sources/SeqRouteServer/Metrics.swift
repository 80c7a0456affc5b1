// Metrics through swift-metrics, kept by swift-prometheus and served as Prometheus text on a
// second Unix socket or a loopback TCP port (`[server] metrics_socket`, `metrics_port`) at
// GET /metrics. Counters move as requests are answered; the ledger's figures (open sessions,
// open holds, how far the hold expiry sweep trails) are read when scraped, on a connection of
// their own. The factory is passed to
// each metric rather than bootstrapped process-wide, so that nothing else in the process
// (tests, tools) depends on a global.

import CoreMetrics
import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import Prometheus
import SeqRouteCore
import SeqRouteLedger

public final class DaemonMetrics: @unchecked Sendable {
    private let registry = PrometheusCollectorRegistry()
    private let factory: PrometheusMetricsFactory
    private let requests: CoreMetrics.Counter
    private let routeLatency: CoreMetrics.Timer
    private let batchSizes: CoreMetrics.Recorder
    private let reconnects: CoreMetrics.Counter
    private let ledgerUp: CoreMetrics.Gauge
    private let openSessions: CoreMetrics.Gauge
    private let openHolds: CoreMetrics.Gauge
    private let expiryLag: CoreMetrics.Gauge
    /// Guards the policy gauge and the decision counters (never held across I/O).
    private let lock = NSLock()
    private var policyGauge: CoreMetrics.Gauge?
    private var decisionCounters: [String: CoreMetrics.Counter] = [:]
    /// Guards the scrape's own state: the reconnects seen and its ledger connection.
    private let scrapeLock = NSLock()
    private var reconnectsSeen = 0
    private var ledger: PGConnection?

    public init() {
        var f = PrometheusMetricsFactory(registry: registry)
        f.durationHistogramBuckets["seqroute_route_duration_seconds"] =
            [.microseconds(500), .milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10),
             .milliseconds(20), .milliseconds(50), .milliseconds(100), .milliseconds(500), .seconds(1)]
        f.valueHistogramBuckets["seqroute_commit_batch_size"] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]
        factory = f
        requests = CoreMetrics.Counter(label: "seqroute_requests_total", factory: f)
        routeLatency = CoreMetrics.Timer(label: "seqroute_route_duration_seconds", factory: f)
        batchSizes = CoreMetrics.Recorder(label: "seqroute_commit_batch_size", aggregate: true, factory: f)
        reconnects = CoreMetrics.Counter(label: "seqroute_ledger_reconnects_total", factory: f)
        ledgerUp = CoreMetrics.Gauge(label: "seqroute_ledger_up", factory: f)
        openSessions = CoreMetrics.Gauge(label: "seqroute_open_sessions", factory: f)
        openHolds = CoreMetrics.Gauge(label: "seqroute_open_holds", factory: f)
        expiryLag = CoreMetrics.Gauge(label: "seqroute_hold_expiry_lag_seconds", factory: f)
    }

    /// One answered request: its outcome, and for a ROUTE the model chosen and the latency.
    func record(reply: String, route: Bool, nanoseconds: UInt64) {
        requests.increment()
        if reply.hasPrefix("ERR ") {
            let code = reply.split(separator: " ", maxSplits: 2).dropFirst().first.map(String.init) ?? "unknown"
            CoreMetrics.Counter(label: "seqroute_errors_total", dimensions: [("code", code)], factory: factory).increment()
        }
        guard route else { return }
        routeLatency.recordNanoseconds(Int64(nanoseconds))
        if reply.hasPrefix("OK ") {
            let model = LineClient.field("bankrupt", in: reply) != nil ? "(bankrupt)"
                : LineClient.field("model", in: reply).map(String.init) ?? "?"
            decisions(model).increment()
        }
    }

    /// The decision counter of one model, made once: making a counter looks it up in the
    /// registry under the registry's lock, which every ROUTE would otherwise pay for.
    private func decisions(_ model: String) -> CoreMetrics.Counter {
        lock.withLock {
            if let c = decisionCounters[model] { return c }
            let c = CoreMetrics.Counter(label: "seqroute_decisions_total", dimensions: [("model", model)], factory: factory)
            decisionCounters[model] = c
            return c
        }
    }

    func recordBatch(_ size: Int) { batchSizes.record(size) }

    /// The policy in force: `seqroute_policy_info{version="…"} 1`, the one before it 0.
    func policy(_ version: String) {
        lock.withLock {
            policyGauge?.record(0)
            let g = CoreMetrics.Gauge(label: "seqroute_policy_info", dimensions: [("version", version)], factory: factory)
            g.record(1)
            policyGauge = g
        }
    }

    /// The text exposition, with the ledger's current figures read now.
    func scrape(committer: GroupCommitter, dsn: String) -> [UInt8] {
        let seen = committer.counterSnapshot.reconnects
        scrapeLock.withLock {
            if seen > reconnectsSeen { reconnects.increment(by: Int64(seen - reconnectsSeen)) }
            reconnectsSeen = seen
            ledgerUp.record(committer.isConnected ? 1 : 0)
            if ledger?.isHealthy != true { ledger = try? PGConnection(dsn: dsn) }
            // Holds of money belong to sessions not closed yet that hold money: both counts read
            // only sessions not closed (the partial index sessions_unclosed), and the decisions
            // of those that hold money, by key.
            if let db = ledger,
               let row = try? db.query("""
                   SELECT count(*) FILTER (WHERE se.state = 'open'),
                          coalesce(sum(CASE WHEN se.held > 0 THEN
                              (SELECT count(*) FROM decisions d
                                WHERE d.session_id = se.id AND d.status = 'held' AND d.hold > 0) ELSE 0 END), 0),
                          (SELECT extract(epoch FROM now() - swept_to) FROM hold_expiry_progress)
                     FROM sessions se
                    WHERE se.closed_at IS NULL
                   """).first {
                openSessions.record(row.int(0) ?? 0)
                openHolds.record(row.int(1) ?? 0)
                if let lag = row.double(2) { expiryLag.record(lag) }
            }
        }
        return registry.emitToBuffer()
    }
}

/// A minimal HTTP/1.1 responder: GET /metrics gives the exposition, anything else 404.
final class MetricsHTTPHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart
    private let body: @Sendable () -> [UInt8]
    private var path: String?

    init(body: @escaping @Sendable () -> [UInt8]) { self.body = body }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head): path = head.method == .GET ? head.uri : nil
        case .body: break
        case .end:
            let found = path == "/metrics"
            let bytes = found ? body() : Array("not found; try GET /metrics\n".utf8)
            var headers = HTTPHeaders()
            headers.add(name: "Content-Type", value: found ? "text/plain; version=0.0.4" : "text/plain")
            headers.add(name: "Content-Length", value: "\(bytes.count)")
            headers.add(name: "Connection", value: "close")
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: found ? .ok : .notFound,
                                                                 headers: headers))), promise: nil)
            var buffer = context.channel.allocator.buffer(capacity: bytes.count)
            buffer.writeBytes(bytes)
            context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
            let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
            context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in bound.value.close(promise: nil) }
        }
    }
}

/// The metrics listener: a Unix socket path, or a TCP port on 127.0.0.1.
final class MetricsServer: @unchecked Sendable {
    private let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    private var channel: Channel?

    func start(socketPath: String?, port: Int?, body: @escaping @Sendable () -> [UInt8]) throws {
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.pipeline.configureHTTPServerPipeline().flatMap {
                    channel.pipeline.addHandler(MetricsHTTPHandler(body: body))
                }
            }
        if let socketPath {
            channel = try bootstrap.bind(unixDomainSocketPath: socketPath, cleanupExistingSocketFile: true).wait()
        } else if let port {
            channel = try bootstrap.bind(host: "127.0.0.1", port: port).wait()
        }
    }

    func stop() {
        try? channel?.close().wait()
        try? group.syncShutdownGracefully()
    }
}
