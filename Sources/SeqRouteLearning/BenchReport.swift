// The benchmark's human outputs: a Markdown table and an SVG plot of the cost-quality frontier,
// one panel per budget level.

import Foundation

public enum BenchReport {
    public static func write(_ out: BenchOutput, to directory: URL) throws {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try encoder.encode(out).write(to: directory.appendingPathComponent("bench.json"), options: .atomic)
        try Data(markdown(out).utf8).write(to: directory.appendingPathComponent("bench.md"), options: .atomic)
        try Data(svg(out).utf8).write(to: directory.appendingPathComponent("frontier.svg"), options: .atomic)
    }

    /// The baseline points left, then those the validation sweep alone left and how many λ the
    /// test-side search tried.
    static func undominated(_ l: LevelSummary) -> String {
        func list(_ points: [String]) -> String { points.isEmpty ? "none" : points.joined(separator: ", ") }
        guard !l.lambdas_searched_on_test.isEmpty else { return list(l.undominated_baseline_points) }
        return "\(list(l.undominated_baseline_points)) (sweep alone: \(list(l.undominated_by_sweep)); "
            + "\(l.lambdas_searched_on_test.count) λ searched on test sessions)"
    }

    static func pct(_ x: Double?) -> String { x.map { String(format: "%.1f%%", 100 * $0) } ?? "—" }
    static func mc(_ usd: Double) -> String { String(format: "%.2f", usd * 1000) }

    public static func markdown(_ out: BenchOutput) -> String {
        var s = "# SeqRoute benchmark\n\nQuality is mean per-turn quality (unserved turns count 0); cost is mean session cost in 10⁻³ USD.\n\n"
        s += "## Summary per budget level\n\n"
        s += "| ρ | pacing q / cost | SeqRoute at λ matched on training sessions | cost cut vs strongest | best baseline | cost cut vs best baseline | SeqRoute max q | CQL without HBR max q | bankruptcy (SeqRoute, max over λ) | bankruptcy (CQL w/o HBR, max) | oracle q | share of oracle | baseline points not dominated |\n"
        s += "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
        for l in out.summary {
            let matched = l.matched_lambda.map { lam in
                String(format: "λ=%.8g: %.3f / %@", lam, l.seqroute_quality ?? 0, mc(l.seqroute_cost ?? 0))
            } ?? "none reaches pacing"
            s += String(format: "| %g | %.3f / %@ | %@ | %@ | %@ | %@ | %.3f | %.3f | %@ | %@ | %.3f | %@ | %@ |\n",
                        l.rho, l.pacing_quality, mc(l.pacing_cost), matched, pct(l.cost_reduction_vs_strongest),
                        l.best_baseline, pct(l.cost_reduction_vs_best_baseline), l.seqroute_max_quality,
                        l.cql_no_hbr_max_quality, pct(l.seqroute_max_bankruptcy), pct(l.cql_no_hbr_max_bankruptcy),
                        l.oracle_quality, pct(l.oracle_share),
                        undominated(l))
        }
        let u = out.strongest_unbudgeted
        s += String(format: "\nThe strongest model on every turn with no budget: quality %.3f at %@.\n", u.quality, mc(u.cost))
        s += "\n## Figures\n\n| figure | value |\n|---|---|\n"
        for (k, v) in out.figures.sorted(by: { $0.key < $1.key }) { s += String(format: "| %@ | %.4g |\n", k, v) }
        if !out.notes.isEmpty { s += "\n" + out.notes.map { "- \($0)" }.joined(separator: "\n") + "\n" }
        s += "\n## Every policy\n\n| policy | ρ | knob | quality | cost | bankruptcy | unserved | over budget |\n|---|---|---|---|---|---|---|---|\n"
        for r in out.results {
            s += String(format: "| %@ | %g | %@ | %.4f | %@ | %@ | %@ | %@ |\n", r.policy, r.rho,
                        r.knob.map { String(format: "%.8g", $0) } ?? "", r.quality, mc(r.cost), pct(r.bankruptcy_rate),
                        pct(r.unserved), pct(r.over_budget))
        }
        return s
    }

    /// One panel per ρ: x is session cost (log scale), y is quality. SeqRoute's λ sweep and
    /// each knobbed baseline are lines; single points are markers.
    public static func svg(_ out: BenchOutput) -> String {
        let rhos = out.summary.map(\.rho)
        let cols = 4, panelW = 330.0, panelH = 250.0, margin = 48.0
        let rows = (rhos.count + cols - 1) / cols
        let width = Double(cols) * panelW + 180, height = Double(rows) * panelH + 40
        let families: [(String, String)] = [
            ("seqroute", "#d62728"), ("cql-no-hbr", "#ff9896"), ("bc", "#9467bd"), ("pacing", "#1f77b4"),
            ("threshold", "#2ca02c"), ("greedy-reserve", "#17becf"), ("myopic", "#bcbd22"), ("random", "#7f7f7f"),
            ("strongest", "#000000"), ("cheapest", "#8c564b"), ("model:", "#c7c7c7"), ("oracle", "#ff7f0e"),
        ]
        func color(_ p: String) -> String { families.first { p == $0.0 || (p.hasPrefix($0.0) && $0.0.hasSuffix(":")) }?.1 ?? "#333" }
        var s = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(width))\" height=\"\(Int(height))\" font-family=\"sans-serif\" font-size=\"11\">\n"
        s += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
        s += "<text x=\"10\" y=\"20\" font-size=\"15\">Cost-quality frontier per budget level ρ (x: mean session cost, 10⁻³ USD, log scale; y: mean per-turn quality)</text>\n"
        for (p, rho) in rhos.enumerated() {
            let ox = Double(p % cols) * panelW, oy = 30 + Double(p / cols) * panelH
            let rs = out.results.filter { $0.rho == rho }
            let costs = rs.map { max($0.cost * 1000, 1e-3) }, qs = rs.map(\.quality)
            let xmin = log10(costs.min()!), xmax = log10(costs.max()!) + 1e-9
            let ymin = max(0, qs.min()! - 0.02), ymax = min(1, qs.max()! + 0.02)
            let pw = panelW - margin - 12, ph = panelH - margin - 20
            func X(_ c: Double) -> Double { ox + margin + (log10(max(c * 1000, 1e-3)) - xmin) / (xmax - xmin) * pw }
            func Y(_ q: Double) -> Double { oy + 14 + (ymax - q) / (ymax - ymin) * ph }
            s += "<rect x=\"\(ox + margin)\" y=\"\(oy + 14)\" width=\"\(pw)\" height=\"\(ph)\" fill=\"none\" stroke=\"#999\"/>\n"
            s += "<text x=\"\(ox + margin + 4)\" y=\"\(oy + 10)\" font-size=\"12\">ρ = \(rho)</text>\n"
            for f in 0...3 {
                let q = ymin + (ymax - ymin) * Double(f) / 3
                s += String(format: "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%.2f</text>\n", ox + margin - 3, Y(q) + 4, q)
                let lc = xmin + (xmax - xmin) * Double(f) / 3
                s += String(format: "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%.2g</text>\n",
                            ox + margin + (lc - xmin) / (xmax - xmin) * pw, oy + 14 + ph + 14, pow(10, lc))
            }
            for name in ["seqroute", "cql-no-hbr", "pacing", "threshold", "greedy-reserve", "myopic"] {
                let line = rs.filter { $0.policy == name }.sorted { $0.cost < $1.cost }
                guard line.count > 1 else { continue }
                let pts = line.map { String(format: "%.1f,%.1f", X($0.cost), Y($0.quality)) }.joined(separator: " ")
                let w = name == "seqroute" ? 2.5 : 1.2
                s += "<polyline points=\"\(pts)\" fill=\"none\" stroke=\"\(color(name))\" stroke-width=\"\(w)\"/>\n"
            }
            for r in rs {
                let radius = r.policy == "seqroute" || r.policy == "oracle" ? 3.2 : 2.4
                s += String(format: "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"%.1f\" fill=\"%@\"><title>%@ %@ q=%.3f cost=%@</title></circle>\n",
                            X(r.cost), Y(r.quality), radius, color(r.policy), r.policy,
                            r.knob.map { String(format: "knob=%.8g", $0) } ?? "", r.quality, mc(r.cost))
            }
        }
        let lx = Double(cols) * panelW + 10
        for (i, f) in families.enumerated() {
            let y = 50 + Double(i) * 18
            s += "<circle cx=\"\(lx)\" cy=\"\(y)\" r=\"4\" fill=\"\(f.1)\"/><text x=\"\(lx + 10)\" y=\"\(y + 4)\">\(f.0 == "model:" ? "single models" : f.0)</text>\n"
        }
        return s + "</svg>\n"
    }
}
