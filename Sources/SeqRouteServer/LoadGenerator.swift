// `seqroute loadgen`: whole sessions (OPEN, ROUTE and REPORT per turn, CLOSE) over N
// connections, all driven by one event loop, spread over one or more daemons' sockets; prints
// decisions per second and ROUTE latency percentiles. With a ledger to watch, it also samples the account's
// spent + held against its cap all through the run.

import Foundation
import Histogram
import NIOCore
import NIOPosix
import SeqRouteCore
import SeqRouteLedger

public struct LoadOptions: Sendable {
    /// Connection c goes to socketPaths[c % count].
    public var socketPaths: [String]
    public var connections: Int
    public var sessions: Int
    public var turns: Int
    public var budget: Int64
    public var account: String?
    /// Target decisions per second over all connections; 0 runs flat out.
    public var rate: Double
    public var seed: UInt64
    /// A libpq connection string: sample `account`'s spent + held against its cap meanwhile.
    public var watchDSN: String?
    /// A connection whose request goes unanswered this long counts an error and is closed.
    public var answerTimeoutSeconds: Int
    public static let maxAnswerTimeoutSeconds = 86_400
    /// Bytes of prompt text on every ROUTE (`text=`); 0 sends `tokens=` instead.
    public var textBytes: Int

    public init(socketPaths: [String], connections: Int, sessions: Int, turns: Int, budget: Int64, account: String?,
                rate: Double, seed: UInt64, watchDSN: String? = nil, answerTimeoutSeconds: Int = 30, textBytes: Int = 0) {
        precondition((1...LoadOptions.maxAnswerTimeoutSeconds).contains(answerTimeoutSeconds),
                     "the answer timeout is 1 s to a day")
        self.socketPaths = socketPaths
        self.answerTimeoutSeconds = answerTimeoutSeconds
        self.textBytes = textBytes
        self.watchDSN = watchDSN
        self.connections = connections
        self.sessions = sessions
        self.turns = turns
        self.budget = budget
        self.account = account
        self.rate = rate
        self.seed = seed
    }
}

public struct LoadReport: Sendable {
    public var decisions: Int
    public var bankrupt: Int
    public var errors: Int
    public var firstErrors: [String]
    public var seconds: Double
    public var p50: Double, p99: Double, p999: Double, max: Double
    /// The watched account: samples taken, the largest spent + held seen, samples over the cap.
    public var watch: (samples: Int, largest: Int64, cap: Int64, overCap: Int)?

    public var summary: String {
        var s = String(format: "decisions=%d seconds=%.2f decisions_per_second=%.0f route_p50_ms=%.3f route_p99_ms=%.3f route_p999_ms=%.3f route_max_ms=%.3f bankrupt_turns=%d errors=%d",
                       decisions, seconds, Double(decisions) / seconds, p50, p99, p999, max, bankrupt, errors)
        if let w = watch {
            s += " watch_samples=\(w.samples) largest_spent_plus_held=\(w.largest) cap=\(w.cap) samples_over_cap=\(w.overCap)"
        }
        return s
    }
}

/// What one load-generator connection says next and makes of each answer: its sessions one
/// after another, each an OPEN, then a ROUTE and a REPORT per turn, then a CLOSE. Pure: the
/// I/O loop sends `request` and hands back each answer line.
struct LoadScript {
    enum Phase: Equatable {
        case open
        case route(tokens: Int)
        case report(turn: String, cost: Int64, quality: Double)
        case close
        case done
    }

    enum Outcome: Equatable {
        case none, decision, bankrupt
        case failure(String)
    }

    let prefix: String
    let sessions: Int
    let turns: Int
    let budget: Int64
    let account: String?
    /// The prompt every ROUTE carries as `text=` (percent-encoded), or nil to send `tokens=`.
    let text: String?
    private(set) var phase: Phase
    private var session = 0
    private var turn = 0
    private var random: SplitMix64

    /// `textBytes` > 0: each ROUTE carries a prompt of at least that many bytes of words, so
    /// that the daemon's featurizer and the ledger's features do the work real prompts cause.
    init(prefix: String, sessions: Int, turns: Int, budget: Int64, account: String?, seed: UInt64, textBytes: Int = 0) {
        self.prefix = prefix
        self.sessions = sessions
        self.turns = turns
        self.budget = budget
        self.account = account
        random = SplitMix64(seed: seed)
        text = textBytes > 0 ? Self.prompt(bytes: textBytes, random: &random) : nil
        phase = sessions > 0 ? .open : .done
    }

    private static let words = ["which", "gas", "do", "plants", "absorb", "from", "the", "air", "explain", "why",
                                "summarise", "this", "contract", "in", "three", "points", "translate", "into",
                                "french", "a", "short", "poem", "about", "rain", "write", "function", "that",
                                "sorts", "list", "of", "numbers", "and", "returns", "median", "value"]

    private static func prompt(bytes: Int, random: inout SplitMix64) -> String {
        var picked: [String] = []
        var length = 0
        while length < bytes {
            let word = words[Int(random.next() % UInt64(words.count))]
            picked.append(word)
            length += word.utf8.count + (picked.count > 1 ? 1 : 0)
        }
        return picked.joined(separator: "%20")
    }

    private var id: String { "\(prefix)-\(session)" }

    /// The line to send now; nil when every session is done.
    var request: String? {
        switch phase {
        case .open:
            var line = "OPEN \(id) budget=\(budget) horizon=\(turns)"
            if let account { line += " account=\(account)" }
            return line
        case .route(let tokens):
            if let text { return "ROUTE \(id) task=qa text=\(text)" }
            return "ROUTE \(id) tokens=\(tokens) task=qa"
        case let .report(turn, cost, quality): return "REPORT \(id) \(turn) cost=\(cost) quality=\(quality)"
        case .close: return "CLOSE \(id)"
        case .done: return nil
        }
    }

    /// Takes the answer to `request` and moves on. A refused OPEN skips its session; a refused
    /// or bankrupt ROUTE skips its REPORT.
    mutating func answered(_ line: String) -> Outcome {
        let ok = line.hasPrefix("OK")
        switch phase {
        case .open:
            if ok { startTurn(0) } else { nextSession() }
            return ok ? .none : .failure(line)
        case .route:
            guard ok else {
                startTurn(turn + 1)
                return .failure(line)
            }
            if LineClient.field("bankrupt", in: line) != nil {
                startTurn(turn + 1)
                return .bankrupt
            }
            let hold = LineClient.field("hold", in: line).flatMap { Int64($0) } ?? 0
            let cost = hold * Int64(30 + random.next() % 70) / 100
            phase = .report(turn: LineClient.field("turn", in: line).map(String.init) ?? "0", cost: cost,
                            quality: Double(random.next() % 1000) / 1000)
            return .none
        case .report:
            startTurn(turn + 1)
            return ok ? .decision : .failure(line)
        case .close:
            nextSession()
            return ok ? .none : .failure(line)
        case .done:
            return .failure("an answer nobody asked for: \(line)")
        }
    }

    /// Turn `next` (0-based) of the session, or its CLOSE after the last.
    private mutating func startTurn(_ next: Int) {
        turn = next
        phase = turn < turns ? .route(tokens: 100 + Int(random.next() % 900)) : .close
    }

    private mutating func nextSession() {
        session += 1
        phase = session < sessions ? .open : .done
    }
}

public enum LoadGenerator {
    public static func run(_ o: LoadOptions) throws -> LoadReport {
        let runID = String(UInt64.random(in: 0..<UInt64.max), radix: 36)
        let totals = Totals()
        // One event loop drives every connection: with a thread per connection, the load
        // generator's own thread switches cost the machine as much as the daemon's work.
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        defer { try? group.syncShutdownGracefully() }
        // Each connection paces its own share of the rate: one decision every `interval` ns,
        // at its own phase within the interval.
        let interval = o.rate > 0 ? UInt64(1e9 * Double(o.connections) / o.rate) : 0

        let watcher = try o.watchDSN.map { dsn -> AccountWatcher in
            guard let account = o.account else { throw ServerError("watching a ledger needs --account") }
            return try AccountWatcher(dsn: dsn, account: account)
        }
        watcher?.start()

        let started = DispatchTime.now().uptimeNanoseconds
        var finished: [EventLoopFuture<Void>] = []
        for c in 0..<o.connections {
            let mySessions = o.sessions / o.connections + (c < o.sessions % o.connections ? 1 : 0)
            if mySessions == 0 { continue }
            let script = LoadScript(prefix: "lg-\(runID)-\(c)", sessions: mySessions, turns: o.turns, budget: o.budget,
                                    account: o.account, seed: o.seed &+ UInt64(c) &* 0x9E37, textBytes: o.textBytes)
            // Connections start their schedules spread over one interval, so that the offered
            // load is even rather than every connection firing at the same instant.
            let firstRoute = started + interval * UInt64(c) / UInt64(o.connections)
            let done = group.next().makePromise(of: Void.self)
            finished.append(done.futureResult)
            let path = o.socketPaths[c % o.socketPaths.count]
            ClientBootstrap(group: group)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(
                            LoadConnection(script: script, interval: interval, firstRoute: firstRoute,
                                           answerTimeout: UInt64(o.answerTimeoutSeconds) * 1_000_000_000,
                                           totals: totals, done: done))
                    }
                }
                .connect(unixDomainSocketPath: path)
                .whenFailure { error in
                    totals.add(LoadConnection.Tally(errors: 1, firstErrors: ["cannot connect to \(path): \(error)"]))
                    done.succeed()
                }
        }
        try EventLoopFuture.andAllComplete(finished, on: group.next()).wait()
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9
        let h = totals.histogram
        return LoadReport(decisions: totals.tally.decisions, bankrupt: totals.tally.bankrupt, errors: totals.tally.errors,
                          firstErrors: totals.tally.firstErrors, seconds: seconds,
                          p50: Double(h.valueAtPercentile(50)) / 1000,
                          p99: Double(h.valueAtPercentile(99)) / 1000,
                          p999: Double(h.valueAtPercentile(99.9)) / 1000,
                          max: Double(h.max) / 1000, watch: watcher?.finish())
    }

    /// One connection's I/O: sends its script's requests one at a time (a ROUTE waits for its
    /// slot when a rate is set), times each ROUTE, and adds its tally to the totals at the end.
    private final class LoadConnection: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer

        struct Tally {
            var decisions = 0, bankrupt = 0, errors = 0
            var firstErrors: [String] = []

            mutating func fail(_ what: String) {
                errors += 1
                if firstErrors.count < 3 { firstErrors.append(what) }
            }

            mutating func add(_ other: Tally) {
                decisions += other.decisions
                bankrupt += other.bankrupt
                errors += other.errors
                firstErrors += other.firstErrors
            }
        }

        private var script: LoadScript
        private let interval: UInt64
        private var nextRoute: UInt64
        private let totals: Totals
        private let done: EventLoopPromise<Void>
        private var tally = Tally()
        private var latencies = LoadGenerator.latencyHistogram()
        private var pending: [UInt8] = []
        private var sentAt: UInt64 = 0
        /// A request is written and its answer not yet read.
        private var awaiting = false
        private let answerTimeout: UInt64
        /// Checks a few times per timeout that the awaited answer is not overdue: one timer per
        /// connection, not one per request, which would cost the machine under load.
        private var watchdog: RepeatedTask?
        /// A ROUTE waiting for its slot (with a rate), cancelled if the connection closes first.
        private var paced: Scheduled<Void>?
        /// The connection already failed (a read or write error, or an answer overdue): its
        /// close is not another error.
        private var broken = false

        init(script: LoadScript, interval: UInt64, firstRoute: UInt64, answerTimeout: UInt64, totals: Totals,
             done: EventLoopPromise<Void>) {
            self.script = script
            self.interval = interval
            self.answerTimeout = answerTimeout
            self.nextRoute = firstRoute
            self.totals = totals
            self.done = done
        }

        func channelActive(context: ChannelHandlerContext) {
            let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            let every = TimeAmount.nanoseconds(Int64(max(answerTimeout / 4, 1_000_000)))
            watchdog = context.eventLoop.scheduleRepeatedTask(initialDelay: every, delay: every) { _ in
                let (handler, context) = loopBound.value
                handler.checkOverdue(context: context)
            }
            sendNext(context: context)
        }

        private func checkOverdue(context: ChannelHandlerContext) {
            // A check already due when the connection closed may still run once.
            guard context.channel.isActive, awaiting, !broken, DispatchTime.now().uptimeNanoseconds - sentAt > answerTimeout else { return }
            tally.fail("no answer within \(answerTimeout / 1_000_000_000) s")
            broken = true
            context.close(promise: nil)
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            var bytes = unwrapInboundIn(data)
            pending += bytes.readBytes(length: bytes.readableBytes) ?? []
            while let nl = pending.firstIndex(of: UInt8(ascii: "\n")) {
                awaiting = false
                let line = String(decoding: pending[..<nl], as: UTF8.self)
                pending.removeSubrange(...nl)
                if case .route = script.phase {
                    // Beyond the histogram's minute (a --timeout above 60 s) a ROUTE counts as a
                    // minute rather than not at all.
                    _ = latencies.record(min((DispatchTime.now().uptimeNanoseconds - sentAt) / 1_000,
                                             LoadGenerator.latencyLimitMicros))
                }
                switch script.answered(line) {
                case .none: break
                case .decision: tally.decisions += 1
                case .bankrupt: tally.bankrupt += 1
                case .failure(let what): tally.fail(what)
                }
                sendNext(context: context)
                if script.phase == .done { return }  // closed: the tally is in the totals already
            }
        }

        func channelInactive(context: ChannelHandlerContext) {
            paced?.cancel()
            watchdog?.cancel()
            if script.phase != .done && !broken { tally.fail("the server closed the connection") }
            totals.add(tally, latencies)
            done.succeed()
        }

        func errorCaught(context: ChannelHandlerContext, error: Error) {
            if !broken { tally.fail("\(error)") }
            broken = true
            context.close(promise: nil)
        }

        private func sendNext(context: ChannelHandlerContext) {
            guard let line = script.request else {
                context.close(promise: nil)
                return
            }
            if case .route = script.phase, interval > 0 {
                nextRoute += interval
                let now = DispatchTime.now().uptimeNanoseconds
                if nextRoute > now {
                    let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
                    paced = context.eventLoop.scheduleTask(in: .nanoseconds(Int64(nextRoute - now))) {
                        let (handler, context) = loopBound.value
                        handler.write(line, context: context)
                    }
                    return
                }
            }
            write(line, context: context)
        }

        private func write(_ line: String, context: ChannelHandlerContext) {
            sentAt = DispatchTime.now().uptimeNanoseconds
            awaiting = true
            var buffer = context.channel.allocator.buffer(capacity: line.utf8.count + 1)
            buffer.writeString(line)
            buffer.writeInteger(UInt8(ascii: "\n"))
            context.writeAndFlush(wrapOutboundOut(buffer), promise: nil)
        }
    }

    static let latencyLimitMicros: UInt64 = 60_000_000

    /// ROUTE latencies in µs, up to a minute, to three significant digits.
    static func latencyHistogram() -> Histogram<UInt64> {
        Histogram(highestTrackableValue: latencyLimitMicros, numberOfSignificantValueDigits: .three)
    }

    /// Reads one account's cap and spent + held over and over on its own connection.
    private final class AccountWatcher: @unchecked Sendable {
        private let db: PGConnection
        private let account: String
        private let lock = NSLock()
        private var stop = false
        private var samples = 0, overCap = 0
        private var largest: Int64 = 0, cap: Int64 = 0
        private let done = DispatchSemaphore(value: 0)

        init(dsn: String, account: String) throws {
            db = try PGConnection(dsn: dsn)
            self.account = account
        }

        func start() {
            Thread {
                while !self.lock.withLock({ self.stop }) {
                    if let row = try? self.db.query("SELECT cap, spent + held FROM accounts WHERE id = $1", [self.account]).first,
                       let cap = row.int64(0), let committed = row.int64(1) {
                        self.lock.withLock {
                            self.samples += 1
                            self.cap = cap
                            self.largest = Swift.max(self.largest, committed)
                            if committed > cap { self.overCap += 1 }
                        }
                    }
                    usleep(1_000)
                }
                self.done.signal()
            }.start()
        }

        func finish() -> (samples: Int, largest: Int64, cap: Int64, overCap: Int) {
            lock.withLock { stop = true }
            done.wait()
            return lock.withLock { (samples, largest, cap, overCap) }
        }
    }

    /// What the connections add up, under one lock.
    private final class Totals: @unchecked Sendable {
        private let lock = NSLock()
        private var _histogram = LoadGenerator.latencyHistogram()
        private var _tally = LoadConnection.Tally()

        func add(_ t: LoadConnection.Tally, _ latencies: Histogram<UInt64>? = nil) {
            lock.withLock {
                if let latencies { _histogram.add(latencies) }
                _tally.add(t)
            }
        }

        var histogram: Histogram<UInt64> { lock.withLock { _histogram } }
        var tally: LoadConnection.Tally { lock.withLock { _tally } }
    }
}
