// The batch that the group committer sends to seqroute_apply(): an array of the composite type
// `seqroute_op` (sql/007_batch_op.sql) in PostgreSQL's binary format, so that the server reads
// integers, floats and bytes as they are instead of parsing JSON (docs/LEDGER.md, The batch
// function).
//
// The binary format names every column's type and takes no column by name: a daemon and a
// ledger must agree on the type's attributes exactly. `BatchRecord.checkType` compares them when
// the committer connects, so a mismatch is one clear error (at start-up the daemon refuses to
// start; on a reconnect it stays down and logs why), not a failure per batch.

/// The attributes of `seqroute_op`, in order, named as in SQL.
enum BatchField: Int, CaseIterable {
    case n, k, s, a, u, b, h, l, t, m, hd, mh, pv, pool, task, pt, f, bs, hs, fe, p, sc, pu, c, q, i, o, fb

    /// The attribute's type: its OID, fixed for PostgreSQL's built-in types.
    var type: UInt32 {
        switch self {
        case .n, .h, .t, .pt, .i, .o: return 23                        // integer
        case .k, .s, .a, .u, .m, .pv, .pool, .task: return 25          // text
        case .b, .hd, .mh, .pu, .c: return 20                          // bigint
        case .l, .p, .q: return 701                                    // double precision
        case .f: return 1021                                           // real[]
        case .bs, .sc: return 1022                                     // double precision[]
        case .hs: return 1016                                          // bigint[]
        case .fe: return 1000                                          // boolean[]
        case .fb: return 17                                            // bytea
        }
    }
}

/// One `seqroute_op` being written in record_recv's format: per column its type, its length
/// (-1 for null) and its bytes. Columns are written in attribute order; those skipped are null.
/// Values are stored into a buffer grown ahead of them, as appending a few bytes at a time
/// through Array's generic paths cost more than the rest of the encoding.
struct BatchRecord {
    private var storage: [UInt8]
    /// How many bytes of `storage` are written.
    private var used = 0
    /// The next column to write; `n` comes first, from the batch.
    private var next = BatchField.k.rawValue

    // A ROUTE with 64 features and a pool of 11 models takes about 900 bytes.
    init(capacity: Int = 1024) { storage = [UInt8](repeating: 0, count: capacity) }

    mutating func text(_ field: BatchField, _ value: String?) {
        guard var value else { return }
        let length = value.utf8.count
        column(field, length: length)
        value.withUTF8 { put($0) }
    }

    mutating func int4(_ field: BatchField, _ value: Int?) {
        guard let value else { return }
        column(field, length: 4)
        // The protocol's limits (turns, tokens, horizon) keep these within 32 bits.
        put(Int32(clamping: value))
    }

    mutating func int8(_ field: BatchField, _ value: Int64?) {
        guard let value else { return }
        column(field, length: 8)
        put(value)
    }

    /// A non-finite value is written as null, as the ledger's columns take only numbers.
    mutating func float8(_ field: BatchField, _ value: Double?) {
        guard let value, value.isFinite else { return }
        column(field, length: 8)
        put(value.bitPattern)
    }

    /// A one-dimensional array; `write` stores one element's bytes (all elements have `size`).
    private mutating func array<T>(_ field: BatchField, _ items: [T], element: UInt32, size: Int,
                                   _ write: (inout BatchRecord, T) -> Void) {
        column(field, length: items.isEmpty ? 12 : 20 + items.count * (4 + size))
        put(UInt32(items.isEmpty ? 0 : 1))   // dimensions
        put(UInt32(0))                       // no nulls
        put(element)
        guard !items.isEmpty else { return }
        put(UInt32(items.count))
        put(UInt32(1))                       // lower bound
        for item in items {
            put(UInt32(size))
            write(&self, item)
        }
    }

    mutating func array(_ field: BatchField, _ items: [Double]) {
        array(field, items, element: 701, size: 8) { $0.put($1.bitPattern) }
    }

    mutating func array(_ field: BatchField, _ items: [Int64]) {
        array(field, items, element: 20, size: 8) { $0.put($1) }
    }

    mutating func array(_ field: BatchField, _ items: [Bool]) {
        array(field, items, element: 16, size: 1) { $0.put(UInt8($1 ? 1 : 0)) }
    }

    /// Features as `decisions.features` stores them (`FeatureBytes`): a bytea of binary32 values.
    mutating func features(_ field: BatchField, _ values: [Double]) {
        column(field, length: 4 * values.count)
        for v in values { put(Float(v).bitPattern) }
    }

    /// The record's columns after `n`, every remaining one null.
    mutating func finished() -> [UInt8] {
        skip(to: BatchField.allCases.count)
        storage.removeSubrange(used...)
        return storage
    }

    private mutating func column(_ field: BatchField, length: Int) {
        precondition(field.rawValue >= next, "seqroute_op columns are written in attribute order")
        skip(to: field.rawValue)
        put(field.type)
        put(UInt32(length))
        next = field.rawValue + 1
    }

    private mutating func skip(to index: Int) {
        while next < index {
            put(BatchField.allCases[next].type)
            put(UInt32(bitPattern: -1))
            next += 1
        }
    }

    /// Room for `n` more bytes.
    private mutating func reserve(_ n: Int) {
        if used + n > storage.count {
            storage.append(contentsOf: repeatElement(0, count: max(n, storage.count)))
        }
    }

    /// `v` in network byte order.
    private mutating func put<I: FixedWidthInteger>(_ v: I) {
        reserve(MemoryLayout<I>.size)
        let at = used
        storage.withUnsafeMutableBytes { $0.storeBytes(of: v.bigEndian, toByteOffset: at, as: I.self) }
        used += MemoryLayout<I>.size
    }

    private mutating func put(_ bytes: UnsafeBufferPointer<UInt8>) {
        reserve(bytes.count)
        let at = used
        storage.withUnsafeMutableBufferPointer { dst in
            if let src = bytes.baseAddress { (dst.baseAddress! + at).update(from: src, count: bytes.count) }
        }
        used += bytes.count
    }

    /// The batch: a one-dimensional `seqroute_op[]` whose element type is the ledger's OID of
    /// `seqroute_op`, each element `n` (its 1-based position) followed by `records[n - 1]`.
    static func batch(_ records: [[UInt8]], elementType: UInt32) -> [UInt8] {
        var out = BatchRecord(capacity: 20 + records.reduce(0) { $0 + $1.count + 20 })
        out.put(UInt32(1))
        out.put(UInt32(0))
        out.put(elementType)
        out.put(UInt32(records.count))
        out.put(UInt32(1))
        for (i, record) in records.enumerated() {
            out.put(UInt32(16 + record.count))                    // the element's length
            out.put(UInt32(BatchField.allCases.count))            // its columns
            out.put(BatchField.n.type)
            out.put(UInt32(4))
            out.put(UInt32(i + 1))
            record.withUnsafeBufferPointer { out.put($0) }
        }
        out.storage.removeSubrange(out.used...)
        return out.storage
    }

    /// The ledger's OID of `seqroute_op`, after checking that its attributes are the ones this
    /// daemon writes.
    static func checkType(on db: PGConnection) throws -> UInt32 {
        let rows = try db.query("""
            SELECT t.oid, a.attname, a.atttypid
              FROM pg_type t JOIN pg_attribute a ON a.attrelid = t.typrelid
             WHERE t.oid = 'seqroute_op'::regtype AND a.attnum > 0 AND NOT a.attisdropped
             ORDER BY a.attnum
            """)
        let found = rows.map { "\($0[1] ?? "?") \($0[2] ?? "?")" }
        let expected = BatchField.allCases.map { "\($0) \($0.type)" }
        guard found == expected, let oid = rows.first?[0].flatMap({ UInt32($0) }) else {
            throw PGError(sqlState: nil, message: """
                the ledger's seqroute_op has the attributes (\(found.joined(separator: ", "))), but this daemon \
                writes (\(expected.joined(separator: ", "))): migrate the ledger with this release
                """, connectionLost: false)
        }
        return oid
    }
}
