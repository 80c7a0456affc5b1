import Testing
@testable import SeqRouteCore

private func parse(_ s: String) -> Result<Request, ProtocolError> { LineProtocol.parse(Array(s.utf8)) }

private func code(_ s: String) -> String? {
    if case .failure(let e) = parse(s) { return e.code }
    return nil
}

@Suite struct LineProtocolTests {
    @Test func parsesEveryVerb() throws {
        #expect(try parse("PING").get() == .ping)
        #expect(try parse("PING\r").get() == .ping)
        #expect(try parse("RELOAD").get() == .reload)
        #expect(try parse("STATS").get() == .stats)
        #expect(try parse("OPEN s1 budget=5000 account=acme user=u%201 horizon=6 lambda=0.5").get()
            == .open(OpenRequest(session: "s1", budget: 5000, account: "acme", user: "u 1", horizon: 6, lambda: 0.5)))
        #expect(try parse("ROUTE s1 tokens=12 task=code text=hi%20there features=0.5,-1,2e-3 lambda=3").get()
            == .route(RouteRequest(session: "s1", tokens: 12, task: "code", text: "hi there", features: [0.5, -1, 0.002], lambda: 3)))
        #expect(try parse("REPORT s1 3 cost=0 quality=1 in=10 out=20").get()
            == .report(ReportRequest(session: "s1", turn: 3, cost: 0, quality: 1, inTokens: 10, outTokens: 20)))
        #expect(try parse("FEEDBACK s1 2 quality=0.25").get() == .feedback(session: "s1", turn: 2, quality: 0.25))
        #expect(try parse("CLOSE s1").get() == .close(session: "s1"))
        #expect(try parse("STATUS s%3D1").get() == .status(session: "s=1"))
    }

    @Test func refusesBadInputWithItsCode() {
        #expect(code("") == "bad_request")
        #expect(code("FLY s1") == "unknown_verb")
        #expect(code("ping") == "unknown_verb")
        #expect(code("PING  ") == "bad_request")
        #expect(code("OPEN  s1 budget=1") == "bad_request")
        #expect(code("OPEN s1 budget=-5") == "bad_request")
        #expect(code("OPEN s1 budget=1.5") == "bad_request")
        #expect(code("OPEN s1 budget=0") == "bad_request")
        #expect(code("OPEN s1 budget=99999999999999999999") == "bad_request")
        #expect(code("OPEN s1 budget=5 budget=6") == "bad_request")
        #expect(code("OPEN s1 colour=red") == "bad_request")
        #expect(code("OPEN budget=5") == "bad_request")
        #expect(code("REPORT s1 1 cost=10 quality=1.5") == "bad_request")
        #expect(code("REPORT s1 1 cost=10 quality=nan") == "bad_request")
        #expect(code("REPORT s1 1 cost=10 quality=NaN") == "bad_request")
        #expect(code("REPORT s1 1 cost=10 quality=-0.1") == "bad_request")
        #expect(code("REPORT s1 1 cost=1e3") == "bad_request")
        #expect(code("REPORT s1 1") == "bad_request")
        #expect(code("REPORT s1 0 cost=1") == "bad_request")
        #expect(code("REPORT s1 x cost=1") == "bad_request")
        #expect(code("ROUTE s1 features=1,,2") == "bad_request")
        #expect(code("ROUTE s1 features=inf") == "bad_request")
        #expect(code("ROUTE s1 text=%zz") == "bad_request")
        #expect(code("ROUTE s1 text=%ff%fe") == "bad_request")
        #expect(code("ROUTE s1 lambda=-1") == "bad_request")
        #expect(code("ROUTE s1 task=a%20b") == "bad_request")
        #expect(code("PING extra") == "bad_request")
        #expect(code("STATUS " + String(repeating: "x", count: 200)) == "bad_request")
        #expect(code("CLOSE s%00") == "bad_request")
    }

    @Test func refusesRawNonASCIIAndControlBytes() {
        for bytes: [UInt8] in [[0x50, 0x49, 0x4E, 0x47, 0xFF], [0x50, 0x00, 0x4E], Array("CLOSE sé".utf8), [0x09]] {
            guard case .failure(let e) = LineProtocol.parse(bytes) else {
                Issue.record("accepted \(bytes)")
                continue
            }
            #expect(e.code == "bad_request")
        }
    }

    @Test func percentEncodingRoundTrips() throws {
        for s in ["plain", "a b=c%d", "naïve 東京", "tab\there", "100%"] {
            let encoded = LineProtocol.percentEncoded(s)
            #expect(!encoded.contains(" ") && !encoded.contains("="))
            #expect(try LineProtocol.percentDecoded(encoded, "x") == s)
        }
        #expect(try LineProtocol.percentDecoded("%41%62c%2520", "x") == "Abc%20")
        // A cut or non-hex escape, and bytes that are not UTF-8 once decoded, are refused.
        for bad in ["%", "ab%2", "%zz", "%g1", "%FF", "%C3%28", "x%E6%9D"] {
            #expect(throws: ProtocolError.self, "\(bad)") { try LineProtocol.percentDecoded(bad, "x") }
        }
    }

    @Test func answersFormat() {
        #expect(OKAnswer([("session", "a b"), ("remaining", "5")]).line == "OK session=a%20b remaining=5")
        #expect(ProtocolError("exists", "already there").line == "ERR exists already there")
    }
}

@Suite struct ErrorLineTests {
    @Test func errorMessagesStayOnOneLine() {
        #expect(ProtocolError("unavailable", "server closed\n\tthe connection\r\n").line == "ERR unavailable server closed the connection ")
    }
}
