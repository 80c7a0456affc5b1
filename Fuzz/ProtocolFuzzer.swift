// libFuzzer entry point for the line protocol, compiled together with SeqRouteCore's sources
// into one instrumented binary by scripts/fuzz.sh (docs/PROTOCOL.md, "Fuzzing the parser").
//
// Every input is cut into lines as the daemon's decoder cuts them, and each line goes through
// the parser and request validation. Besides not crashing, what the parser says must hold: an
// error is one well-formed ERR line; an accepted request carries only values inside the
// protocol's limits; an accepted session id survives the round trip through the encoder
// clients use; a ROUTE's text goes through the featurizer.

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = UnsafeBufferPointer(start: data, count: size)
    for line in bytes.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false) {
        check(Array(line))
    }
    return 0
}

func check(_ line: [UInt8]) {
    switch LineProtocol.parse(line) {
    case .failure(let error):
        let text = error.line
        require(text.hasPrefix("ERR \(error.code) "), "error line \(text)")
        require(error.code.utf8.allSatisfy { ($0 >= 0x61 && $0 <= 0x7A) || $0 == 0x5F }, "error code \(error.code)")
        require(text.unicodeScalars.allSatisfy { $0.value >= 0x20 && $0.value != 0x7F }, "control character in \(text)")
    case .success(let request):
        switch request {
        case .open(let o):
            session(o.session)
            if let b = o.budget { money(b) }
            if let l = o.lambda { require(l.isFinite && l >= 0 && l <= Limits.maxLambda, "lambda \(l)") }
            if let h = o.horizon { require(h >= 1 && h <= Limits.maxHorizon, "horizon \(h)") }
        case .route(let r):
            session(r.session)
            if let f = r.features { require(f.count <= Limits.maxFeatures && f.allSatisfy(\.isFinite), "features") }
            if let l = r.lambda { require(l.isFinite && l >= 0 && l <= Limits.maxLambda, "lambda \(l)") }
            if let t = r.tokens { require(t >= 0 && t <= Limits.maxTokens, "tokens \(t)") }
            if let text = r.text { featurized(text) }
        case .report(let r):
            session(r.session)
            money(r.cost)
            require(r.turn >= 1, "turn \(r.turn)")
            if let q = r.quality { quality(q) }
        case .feedback(let s, let turn, let q):
            session(s)
            require(turn >= 1, "turn \(turn)")
            quality(q)
        case .close(let s), .status(let s):
            session(s)
        case .ping, .reload, .stats:
            break
        }
    }
}

func session(_ id: String) {
    require(!id.isEmpty && id.utf8.count <= Limits.maxIdentifierBytes, "session id length")
    require(id.unicodeScalars.allSatisfy { $0.value >= 0x20 && $0.value != 0x7F }, "control character in session id")
    guard case .success(.close(let again)) = LineProtocol.parse(Array("CLOSE \(LineProtocol.percentEncoded(id))".utf8)),
          again == id else {
        fatalError("session id \(id.debugDescription) does not survive percent-encoding")
    }
}

/// The featurizer reads the text through raw buffers: any text gives a vector of its dimension
/// with finite values, a hashed part of unit length or all zero, and length slots in range.
func featurized(_ text: String) {
    let v = HashingFeaturizer(dimension: 16).features(of: text)
    require(v.count == 16 && v.allSatisfy(\.isFinite), "features of \(text.debugDescription)")
    let norm = v[HashingFeaturizer.lengthSlots...].reduce(0) { $0 + $1 * $1 }
    require(norm == 0 || abs(norm - 1) < 1e-9, "hashed norm \(norm)")
    require(v[0] >= 0 && v[1] >= 0 && v[1] <= v[0] + 1e-12, "length slots \(v[0]), \(v[1])")
}

func money(_ m: Int64) { require(m >= 0 && m <= Limits.maxMoney, "money \(m)") }
func quality(_ q: Double) { require(q.isFinite && q >= 0 && q <= 1, "quality \(q)") }

func require(_ ok: Bool, _ what: @autoclosure () -> String) {
    if !ok { fatalError("invariant broken: \(what())") }
}
