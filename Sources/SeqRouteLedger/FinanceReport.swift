// `seqroute report` as text: the rows of ReportQueries as CSV, or as one self-contained HTML
// page (inline CSS and SVG, no script, nothing fetched) with three charts: spend over time per
// model, budget burn-down per account, quality against cost per policy version.

import Foundation

public struct FinanceReport: Sendable {
    public var from: String
    public var to: String
    public var account: String?
    public var rows: [ReportRow]
    public var accounts: [ReportAccount]

    public init(from: String, to: String, account: String?, rows: [ReportRow], accounts: [ReportAccount]) {
        self.from = from
        self.to = to
        self.account = account
        self.rows = rows
        self.accounts = accounts
    }

    public var csv: String {
        var out = "day,account,model,policy_version,spent_micros,decisions,mean_quality\n"
        for r in rows {
            out += [r.day, r.account, r.model, r.policyVersion, "\(r.spentMicros)", "\(r.decisions)",
                    r.meanQuality.map { String(format: "%.4f", $0) } ?? ""].map(Self.csvField).joined(separator: ",") + "\n"
        }
        return out
    }

    static func csvField(_ s: String) -> String {
        s.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" || $0 == "\r" })
            ? "\"" + s.replacingOccurrences(of: "\"", with: "\"\"") + "\"" : s
    }

    static func html(_ s: String) -> String {
        s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
    }

    static func usd(_ micros: Int64) -> String { String(format: "%.4f", Double(micros) / 1e6) }

    /// Every day of [from, to), so that a day without spend is a point at zero, not a gap.
    var days: [String] {
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.timeZone = TimeZone(identifier: "UTC")
        f.dateFormat = "yyyy-MM-dd"
        guard var d = f.date(from: from), let end = f.date(from: to) else { return Array(Set(rows.map(\.day))).sorted() }
        var out: [String] = []
        while d < end && out.count < 3_660 {
            out.append(f.string(from: d))
            d = d.addingTimeInterval(86_400)
        }
        return out
    }

    static let palette = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f"]

    /// A line chart: one series per name, one value per day.
    static func lineChart(title: String, days: [String], series: [(String, [Double])], unit: String,
                          horizontal: [(String, Double)] = []) -> String {
        let w = 760.0, h = 260.0, left = 70.0, right = 180.0, top = 30.0, bottom = 40.0
        let top1 = max(series.flatMap(\.1).max() ?? 0, horizontal.map(\.1).max() ?? 0, 1e-9)
        func x(_ i: Int) -> Double { left + (days.count > 1 ? Double(i) / Double(days.count - 1) : 0.5) * (w - left - right) }
        func y(_ v: Double) -> Double { top + (1 - v / top1) * (h - top - bottom) }
        var svg = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(w))\" height=\"\(Int(h))\" role=\"img\" aria-label=\"\(html(title))\">"
        svg += "<text x=\"\(left)\" y=\"18\" font-size=\"14\" font-weight=\"bold\">\(html(title))</text>"
        svg += "<line x1=\"\(left)\" y1=\"\(y(0))\" x2=\"\(w - right)\" y2=\"\(y(0))\" stroke=\"#999\"/>"
        svg += "<line x1=\"\(left)\" y1=\"\(top)\" x2=\"\(left)\" y2=\"\(y(0))\" stroke=\"#999\"/>"
        for k in 0...4 {
            let v = top1 * Double(k) / 4
            svg += "<text x=\"\(left - 6)\" y=\"\(y(v) + 4)\" font-size=\"10\" text-anchor=\"end\">\(String(format: "%.4g", v))</text>"
        }
        svg += "<text x=\"12\" y=\"\(top + 10)\" font-size=\"10\">\(html(unit))</text>"
        let step = max(1, days.count / 8)
        for (i, d) in days.enumerated() where i % step == 0 || i == days.count - 1 {
            svg += "<text x=\"\(x(i))\" y=\"\(h - bottom + 16)\" font-size=\"10\" text-anchor=\"middle\">\(d.suffix(5))</text>"
        }
        for (n, (name, value)) in horizontal.enumerated() {
            svg += "<line x1=\"\(left)\" y1=\"\(y(value))\" x2=\"\(w - right)\" y2=\"\(y(value))\" stroke=\"\(palette[n % palette.count])\" stroke-dasharray=\"6 4\"/>"
            svg += "<text x=\"\(w - right + 6)\" y=\"\(y(value) + 4)\" font-size=\"10\">\(html(name))</text>"
        }
        for (n, (name, values)) in series.enumerated() {
            let color = palette[n % palette.count]
            let points = values.enumerated().map { "\(x($0.offset)),\(y($0.element))" }.joined(separator: " ")
            svg += "<polyline fill=\"none\" stroke=\"\(color)\" stroke-width=\"2\" points=\"\(points)\"/>"
            svg += "<rect x=\"\(w - right + 6)\" y=\"\(top + Double(n) * 16)\" width=\"10\" height=\"10\" fill=\"\(color)\"/>"
            svg += "<text x=\"\(w - right + 20)\" y=\"\(top + Double(n) * 16 + 9)\" font-size=\"10\">\(html(String(name.prefix(26))))</text>"
        }
        return svg + "</svg>"
    }

    /// Quality against cost, one labelled point per policy version.
    static func scatter(title: String, points: [(String, Double, Double)]) -> String {
        let w = 760.0, h = 300.0, left = 70.0, right = 40.0, top = 30.0, bottom = 44.0
        let xmax = max(points.map(\.1).max() ?? 0, 1e-9) * 1.1
        func x(_ v: Double) -> Double { left + v / xmax * (w - left - right) }
        func y(_ q: Double) -> Double { top + (1 - q) * (h - top - bottom) }
        var svg = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(w))\" height=\"\(Int(h))\" role=\"img\" aria-label=\"\(html(title))\">"
        svg += "<text x=\"\(left)\" y=\"18\" font-size=\"14\" font-weight=\"bold\">\(html(title))</text>"
        svg += "<line x1=\"\(left)\" y1=\"\(y(0))\" x2=\"\(w - right)\" y2=\"\(y(0))\" stroke=\"#999\"/>"
        svg += "<line x1=\"\(left)\" y1=\"\(top)\" x2=\"\(left)\" y2=\"\(y(0))\" stroke=\"#999\"/>"
        for k in 0...4 {
            let q = Double(k) / 4
            svg += "<text x=\"\(left - 6)\" y=\"\(y(q) + 4)\" font-size=\"10\" text-anchor=\"end\">\(String(format: "%.2f", q))</text>"
            let c = xmax * Double(k) / 4
            svg += "<text x=\"\(x(c))\" y=\"\(h - bottom + 16)\" font-size=\"10\" text-anchor=\"middle\">\(String(format: "%.4g", c))</text>"
        }
        svg += "<text x=\"\(w / 2)\" y=\"\(h - 8)\" font-size=\"11\" text-anchor=\"middle\">mean cost per decision (USD)</text>"
        svg += "<text x=\"14\" y=\"\(top + 10)\" font-size=\"11\">quality</text>"
        for (n, (name, cost, quality)) in points.enumerated() {
            let color = palette[n % palette.count]
            svg += "<circle cx=\"\(x(cost))\" cy=\"\(y(quality))\" r=\"5\" fill=\"\(color)\"/>"
            // Labels alternate above and below their points, so that near neighbours stay legible.
            svg += "<text x=\"\(x(cost) + 8)\" y=\"\(y(quality) + (n % 2 == 0 ? -6 : 14))\" font-size=\"10\">\(html(name))</text>"
        }
        return svg + "</svg>"
    }

    public var htmlPage: String {
        let days = self.days
        let dayIndex = Dictionary(uniqueKeysWithValues: days.enumerated().map { ($1, $0) })
        let total = rows.reduce(Int64(0)) { $0 + $1.spentMicros }
        let decisions = rows.reduce(0) { $0 + $1.decisions }

        // Spend per model per day: the eight largest models, the rest as "other".
        var byModel: [String: Int64] = [:]
        for r in rows { byModel[r.model, default: 0] += r.spentMicros }
        let top = byModel.sorted { $0.value > $1.value }.prefix(8).map(\.key)
        var modelSeries: [String: [Double]] = [:]
        for r in rows {
            guard let i = dayIndex[r.day] else { continue }
            let name = top.contains(r.model) ? r.model : "other"
            modelSeries[name, default: [Double](repeating: 0, count: days.count)][i] += Double(r.spentMicros) / 1e6
        }
        let modelChart = Self.lineChart(title: "Spend per day and model", days: days,
                                        series: (top + (modelSeries["other"] != nil ? ["other"] : [])).compactMap { n in
                                            modelSeries[n].map { (n, $0) } }, unit: "USD")

        // Burn-down: cumulative spend per account over the range, against its cap.
        var burn = ""
        for a in accounts {
            var daily = [Double](repeating: 0, count: days.count)
            for r in rows where r.account == a.id { if let i = dayIndex[r.day] { daily[i] += Double(r.spentMicros) / 1e6 } }
            var cumulative = daily
            for i in cumulative.indices.dropFirst() { cumulative[i] += cumulative[i - 1] }
            let capLabel = a.period == "none" ? "cap" : "cap per \(a.period) period"
            burn += Self.lineChart(title: "Budget burn-down: \(a.id)", days: days, series: [("spent since \(from)", cumulative)],
                                   unit: "USD", horizontal: [(capLabel, Double(a.cap) / 1e6)])
        }

        // Per policy version: decisions, spend, quality.
        var policies: [String: (decisions: Int, spent: Int64, qualitySum: Double, qualityN: Int)] = [:]
        for r in rows where r.policyVersion != "(none)" {
            var p = policies[r.policyVersion] ?? (0, 0, 0, 0)
            p.decisions += r.decisions
            p.spent += r.spentMicros
            if let q = r.meanQuality { p.qualitySum += q * Double(r.decisions); p.qualityN += r.decisions }
            policies[r.policyVersion] = p
        }
        let policyRows = policies.sorted { $0.key < $1.key }
        let scatter = Self.scatter(title: "Quality against cost per policy version", points: policyRows.compactMap { name, p in
            guard p.decisions > 0, p.qualityN > 0 else { return nil }
            return (name, Double(p.spent) / 1e6 / Double(p.decisions), p.qualitySum / Double(p.qualityN))
        })

        var page = """
            <!DOCTYPE html>
            <html lang="en"><head><meta charset="utf-8"><title>SeqRoute spend report \(Self.html(from)) to \(Self.html(to))</title>
            <style>body{font-family:sans-serif;margin:24px;color:#222}table{border-collapse:collapse;margin:8px 0 24px}
            td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
            svg{display:block;margin:12px 0 24px}</style></head><body>
            <h1>SeqRoute spend report</h1>
            <p>Days \(Self.html(from)) to \(Self.html(to)) (UTC, end excluded)\(account.map { ", account " + Self.html($0) } ?? ", all accounts").
            Spend: <b>\(Self.usd(total)) USD</b> over <b>\(decisions)</b> decisions.</p>
            <h2>Accounts</h2><table><tr><th>account</th><th>period</th><th>cap (USD)</th><th>spent (USD)</th><th>held (USD)</th><th>remaining (USD)</th></tr>
            """
        for a in accounts {
            page += "<tr><td>\(Self.html(a.id))</td><td>\(Self.html(a.period))</td><td>\(Self.usd(a.cap))</td><td>\(Self.usd(a.spent))</td><td>\(Self.usd(a.held))</td><td>\(Self.usd(a.cap - a.spent - a.held))</td></tr>"
        }
        page += "</table>\n" + modelChart + "\n" + burn + "\n" + scatter + "\n"
        page += "<h2>Policy versions</h2><table><tr><th>policy version</th><th>decisions</th><th>spent (USD)</th><th>cost per decision (USD)</th><th>mean quality</th></tr>"
        for (name, p) in policyRows {
            let perDecision = p.decisions > 0 ? String(format: "%.6f", Double(p.spent) / 1e6 / Double(p.decisions)) : "—"
            let quality = p.qualityN > 0 ? String(format: "%.4f", p.qualitySum / Double(p.qualityN)) : "—"
            page += "<tr><td>\(Self.html(name))</td><td>\(p.decisions)</td><td>\(Self.usd(p.spent))</td><td>\(perDecision)</td><td>\(quality)</td></tr>"
        }
        page += "</table>\n<h2>Spend per model</h2><table><tr><th>model</th><th>spent (USD)</th></tr>"
        for (model, spent) in byModel.sorted(by: { $0.value > $1.value }) {
            page += "<tr><td>\(Self.html(model))</td><td>\(Self.usd(spent))</td></tr>"
        }
        return page + "</table>\n</body></html>\n"
    }
}
