// The Unix-socket server: lines in, answers out, in order, one request at a time per
// connection (a client may pipeline; further lines wait their turn). On shutdown it stops
// accepting, lets each connection finish what it has received, then closes it.

import Foundation
import NIOCore
import NIOPosix
import SeqRouteCore

enum LineEvent {
    case line(ByteBuffer)
    case tooLong
}

/// Splits the byte stream at `\n`; a line longer than the limit ends the stream.
final class LineDecoder: ByteToMessageDecoder {
    typealias InboundOut = LineEvent
    private let maxLength: Int
    private var scanned = 0
    private var gaveUp = false

    init(maxLength: Int) { self.maxLength = maxLength }

    func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        if gaveUp {
            buffer.moveReaderIndex(to: buffer.writerIndex)
            return .needMoreData
        }
        let view = buffer.readableBytesView
        if let newline = view[(view.startIndex + scanned)...].firstIndex(of: UInt8(ascii: "\n")) {
            let length = newline - view.startIndex
            scanned = 0
            if length > maxLength { return giveUp(context, &buffer) }
            let line = buffer.readSlice(length: length)!
            buffer.moveReaderIndex(forwardBy: 1)
            context.fireChannelRead(wrapInboundOut(.line(line)))
            return .continue
        }
        scanned = view.count
        if view.count > maxLength { return giveUp(context, &buffer) }
        return .needMoreData
    }

    private func giveUp(_ context: ChannelHandlerContext, _ buffer: inout ByteBuffer) -> DecodingState {
        gaveUp = true
        buffer.moveReaderIndex(to: buffer.writerIndex)
        context.fireChannelRead(wrapInboundOut(.tooLong))
        return .needMoreData
    }

    func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws -> DecodingState {
        // A partial line at end of stream was never a request: drop it.
        while try decode(context: context, buffer: &buffer) == .continue {}
        buffer.moveReaderIndex(to: buffer.writerIndex)
        return .needMoreData
    }
}

/// One connection: runs its requests one after the other and writes each answer in order.
final class ConnectionHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = LineEvent
    typealias OutboundOut = ByteBuffer

    private let router: Router
    private let registry: ConnectionRegistry
    private let maxLineBytes: Int
    /// Lines received and not yet answered; a `.tooLong` is answered in its turn, then the
    /// connection closes.
    private var pending: [LineEvent] = []
    private var next = 0
    private var busy = false
    private var draining = false
    private var readingPaused = false
    /// An answer is waiting in the outbound buffer of a client that does not read: the next
    /// request waits for the client, so a connection never holds more than one buffer of answers.
    private var waitingForClient = false
    private var context: ChannelHandlerContext?
    /// Lines a client may pipeline before the server stops reading from it.
    private let maxPending = 256

    /// The client process's uid (SO_PEERCRED); every ROUTE of this connection records it.
    private let peerUID: UInt32?

    init(router: Router, registry: ConnectionRegistry, maxLineBytes: Int, peerUID: UInt32?) {
        self.router = router
        self.registry = registry
        self.maxLineBytes = maxLineBytes
        self.peerUID = peerUID
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }
    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    func channelActive(context: ChannelHandlerContext) {
        registry.add(self, on: context.eventLoop)
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        registry.remove(self)
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !draining else { return }
        let event = unwrapInboundIn(data)
        pending.append(event)
        if case .tooLong = event { draining = true }
        if pending.count - next >= maxPending && !readingPaused {
            readingPaused = true
            context.channel.setOption(ChannelOptions.autoRead, value: false).whenComplete { _ in }
        }
        if !busy { runNext() }
    }

    /// The client closed its writing side: answer what it sent, then close.
    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let e = event as? ChannelEvent, e == .inputClosed {
            drain()
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }

    /// Called on the event loop: finish what was received, then close.
    func drain() {
        draining = true
        if !busy { context?.close(promise: nil) }
    }

    private func runNext() {
        guard let context else { return }
        guard next < pending.count else {
            busy = false
            pending.removeAll(keepingCapacity: true)
            next = 0
            if readingPaused {
                readingPaused = false
                context.channel.setOption(ChannelOptions.autoRead, value: true).whenComplete { _ in }
            }
            if draining { context.close(promise: nil) }
            return
        }
        busy = true
        let event = pending[next]
        next += 1
        guard case .line(let line) = event else {
            var buffer = context.channel.allocator.buffer(capacity: 80)
            buffer.writeString(ProtocolError("too_long", "line longer than \(maxLineBytes) bytes; closing").line + "\n")
            let channel = context.channel
            context.writeAndFlush(wrapOutboundOut(buffer)).whenComplete { _ in channel.close(promise: nil) }
            return
        }
        let bytes = Array(line.readableBytesView)
        let loop = context.eventLoop
        let router = self.router, peerUID = self.peerUID
        Task(executorPreference: EventLoopTaskExecutor(loop)) {
            let reply = await router.answer(line: bytes, peerUID: peerUID)
            loop.execute {
                guard let context = self.context else { return }
                var buffer = context.channel.allocator.buffer(capacity: reply.utf8.count + 1)
                buffer.writeString(reply)
                buffer.writeInteger(UInt8(ascii: "\n"))
                context.writeAndFlush(self.wrapOutboundOut(buffer), promise: nil)
                if context.channel.isWritable { self.runNext() } else { self.waitingForClient = true }
            }
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable && waitingForClient {
            waitingForClient = false
            runNext()
        }
        context.fireChannelWritabilityChanged()
    }
}

/// Runs a request's task on its connection's event loop rather than in Swift's global pool: the
/// ledger's answer then wakes that loop directly, and a request costs two thread switches
/// (to the committer and back) instead of four.
final class EventLoopTaskExecutor: TaskExecutor, @unchecked Sendable {
    private let loop: any EventLoop

    init(_ loop: any EventLoop) { self.loop = loop }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        loop.execute { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
    }
}

/// Answers a connection it will not serve with one ERR line, and closes it.
final class RefusingHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    private let error: ProtocolError

    init(_ error: ProtocolError) { self.error = error }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { refuse(context) }
    }

    func channelActive(context: ChannelHandlerContext) { refuse(context) }

    private func refuse(_ context: ChannelHandlerContext) {
        var buffer = context.channel.allocator.buffer(capacity: 80)
        buffer.writeString(error.line + "\n")
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(buffer)).whenComplete { _ in channel.close(promise: nil) }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {}
}

/// struct ucred of <sys/socket.h> (pid, uid, gid), which Swift's Glibc module does not export:
/// SO_PEERCRED fills three 32-bit fields in this order, which is how Swift lays out these three.
struct PeerCredentials: Sendable {
    var pid: Int32
    var uid: UInt32
    var gid: UInt32
}

/// Who may use the daemon: everyone who can open the socket when both lists are empty; else
/// the listed uids, members of the listed groups (primary group from SO_PEERCRED, or a
/// supplementary group of the peer's user), and always the daemon's own uid (its tools:
/// ExecReload, the refit).
public struct PeerPolicy: Sendable {
    public var uids: Set<UInt32>
    public var gids: Set<UInt32>

    public init(uids: [UInt32], gids: [UInt32]) {
        self.uids = Set(uids)
        self.gids = Set(gids)
    }

    func allows(_ cred: PeerCredentials) -> Bool {
        if uids.isEmpty && gids.isEmpty { return true }
        if cred.uid == getuid() || uids.contains(cred.uid) || gids.contains(cred.gid) { return true }
        guard !gids.isEmpty else { return false }
        // The peer user's supplementary groups, with the reentrant lookups: every event loop
        // may be here at once.
        var pw = passwd()
        var result: UnsafeMutablePointer<passwd>?
        var text = [CChar](repeating: 0, count: 4096)
        guard getpwuid_r(cred.uid, &pw, &text, text.count, &result) == 0, result != nil else { return false }
        var count: Int32 = 64
        var groups = [gid_t](repeating: 0, count: Int(count))
        if getgrouplist(pw.pw_name, pw.pw_gid, &groups, &count) < 0 {
            groups = [gid_t](repeating: 0, count: Int(count))  // count now says how many there are
            guard getgrouplist(pw.pw_name, pw.pw_gid, &groups, &count) >= 0 else { return false }
        }
        return groups.prefix(Int(count)).contains { gids.contains($0) }
    }
}

/// The open connections, so that shutdown can drain them.
final class ConnectionRegistry: @unchecked Sendable {
    private let lock = NSLock()
    private var handlers: [ObjectIdentifier: (ConnectionHandler, EventLoop)] = [:]

    private var admitted = 0

    /// Counts a new connection in, unless `limit` are open already; the caller calls
    /// `leave()` when an admitted connection closes.
    func admit(limit: Int) -> Bool {
        lock.withLock {
            guard admitted < limit else { return false }
            admitted += 1
            return true
        }
    }
    func leave() { lock.withLock { admitted -= 1 } }

    func add(_ h: ConnectionHandler, on loop: EventLoop) { lock.withLock { handlers[ObjectIdentifier(h)] = (h, loop) } }
    func remove(_ h: ConnectionHandler) { lock.withLock { _ = handlers.removeValue(forKey: ObjectIdentifier(h)) } }
    var count: Int { lock.withLock { handlers.count } }

    func drainAll() {
        for (h, loop) in lock.withLock({ Array(handlers.values) }) { loop.execute { h.drain() } }
    }
}

public final class SocketServer: @unchecked Sendable {
    private let group: MultiThreadedEventLoopGroup
    private let router: Router
    private let registry = ConnectionRegistry()
    private var listener: Channel?
    public private(set) var path: String

    public init(router: Router, path: String, threads: Int = System.coreCount) {
        self.router = router
        self.path = path
        self.group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, threads))
    }

    /// True when systemd passed the listening socket (socket activation).
    public private(set) var adopted = false

    /// The listening socket systemd passed (LISTEN_PID is this process, LISTEN_FDS ≥ 1: the
    /// first one, fd 3), or nil. The variables are removed and the descriptor marked
    /// close-on-exec, so that children (the embedded PostgreSQL) inherit neither.
    public static func passedSocket() -> Int32? {
        let env = ProcessInfo.processInfo.environment
        defer {
            unsetenv("LISTEN_PID")
            unsetenv("LISTEN_FDS")
            unsetenv("LISTEN_FDNAMES")
        }
        guard env["LISTEN_PID"] == String(getpid()), let n = env["LISTEN_FDS"].flatMap({ Int($0) }), n >= 1 else {
            return nil
        }
        _ = fcntl(3, F_SETFD, FD_CLOEXEC)
        return 3
    }

    /// Adopts `passed` (the socket systemd passed, see `passedSocket()`), else binds the socket
    /// path (refusing one another daemon listens on) and sets its mode.
    public func start(mode: UInt32, socketGroup: UInt32?, maxLineBytes: Int, maxConnections: Int, peers: PeerPolicy,
                      passed: Int32?) throws {
        let router = self.router, registry = self.registry
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(ChannelOptions.backlog, value: 1024)
            .childChannelOption(ChannelOptions.autoRead, value: true)
            .childChannelOption(ChannelOptions.allowRemoteHalfClosure, value: true)
            .childChannelInitializer { channel in
                // SO_PEERCRED: who is at the other end, as the kernel saw it at connect().
                let credentials: EventLoopFuture<PeerCredentials> = (channel as? SocketOptionProvider).map {
                    $0.unsafeGetSocketOption(level: SocketOptionLevel(SOL_SOCKET), name: SocketOptionName(SO_PEERCRED))
                } ?? channel.eventLoop.makeFailedFuture(ServerError("no peer credentials on this channel"))
                return credentials.map(Optional.some).recover { _ in nil }.flatMapThrowing { cred in
                    let handlers = channel.pipeline.syncOperations
                    if let cred, !peers.allows(cred) {
                        try handlers.addHandler(RefusingHandler(ProtocolError("forbidden", "uid \(cred.uid) may not use this daemon")))
                        return
                    }
                    if cred == nil && !(peers.uids.isEmpty && peers.gids.isEmpty) {
                        try handlers.addHandler(RefusingHandler(ProtocolError("forbidden", "the client's credentials are unknown")))
                        return
                    }
                    guard registry.admit(limit: maxConnections) else {
                        try handlers.addHandler(RefusingHandler(ProtocolError(
                            "busy", "the daemon has \(maxConnections) connections open, its limit; try again later")))
                        return
                    }
                    channel.closeFuture.whenComplete { _ in registry.leave() }
                    try handlers.addHandler(ByteToMessageHandler(LineDecoder(maxLength: maxLineBytes)))
                    try handlers.addHandler(ConnectionHandler(router: router, registry: registry, maxLineBytes: maxLineBytes,
                                                              peerUID: cred?.uid))
                }
            }
        if let fd = passed {
            listener = try bootstrap.withBoundSocket(fd).wait()
            adopted = true
            return
        }
        if FileManager.default.fileExists(atPath: path) {
            if SocketServer.somebodyListens(at: path) {
                throw ServerError("another process is listening on \(path)")
            }
        }
        let dir = (path as NSString).deletingLastPathComponent
        if !dir.isEmpty { try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true) }
        listener = try bootstrap
            .bind(unixDomainSocketPath: path, cleanupExistingSocketFile: true).wait()
        if let socketGroup, chown(path, uid_t.max, socketGroup) != 0 {
            throw ServerError("cannot give \(path) to group \(socketGroup): \(String(cString: strerror(errno)))")
        }
        guard chmod(path, mode_t(mode)) == 0 else {
            throw ServerError("cannot set mode \(String(mode, radix: 8)) on \(path)")
        }
    }

    /// Stops accepting, lets connections finish what they received (up to `timeout`), closes them.
    public func shutdown(timeout: TimeInterval = 10) {
        try? listener?.close().wait()
        registry.drainAll()
        let deadline = Date().addingTimeInterval(timeout)
        while registry.count > 0 && Date() < deadline { usleep(10_000) }
        try? group.syncShutdownGracefully()
        // A passed socket belongs to systemd, which keeps it for the next start.
        if !adopted { unlink(path) }
    }

    static func somebodyListens(at path: String) -> Bool {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else { return false }
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        let size = socklen_t(MemoryLayout<sockaddr_un>.size)
        return withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, size) == 0 }
        }
    }
}

public struct ServerError: Error, CustomStringConvertible {
    public var description: String
    public init(_ d: String) { description = d }
}
