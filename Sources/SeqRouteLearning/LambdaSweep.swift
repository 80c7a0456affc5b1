// Where to evaluate λ. A learned policy's spending is a step function of λ: across most of the
// range nothing changes, and then a whole task moves to another model within a narrow band.
// A fixed grid leaves gaps in the cost-quality frontier exactly there, so the sweep bisects
// the intervals across which the frontier jumps most, in cost or in quality, measured on
// sessions the caller chooses (validation sessions drawn from training queries, never test
// sessions).

public enum LambdaSweep {
    /// `grid` (sorted, without repeats) plus up to `extra` midpoints. Each step bisects the
    /// interval whose ends differ most in any figure; it stops when no interval's jump exceeds
    /// `threshold`, or when the only such intervals are narrower than `minimumWidth` of their
    /// upper end. `figures(λ)` gives the frontier's coordinates (the mean cost and the mean
    /// quality at each budget level), in the same order for every λ. The first `relative`
    /// figures jump by their change over the larger magnitude of the two ends, the others by
    /// their change over their range on `grid`: costs are compared in proportion (a cost
    /// reduction is a percentage, and a gap of 3% between two cheap points is as wide as one
    /// between two dear ones), qualities in points.
    public static func refined(_ grid: [Double], adding extra: Int, threshold: Double = 0.02,
                               minimumWidth: Double = 0.005, relative: Int = 0,
                               figures: (Double) -> [Double]) -> [Double] {
        var points = Array(Set(grid)).sorted().map { (lambda: $0, figures: figures($0)) }
        guard points.count >= 2, extra > 0 else { return points.map(\.lambda) }
        let count = points[0].figures.count
        precondition((0...count).contains(relative), "relative counts figures: 0…\(count)")
        let ranges = (0..<count).map { l in
            let values = points.map { $0.figures[l] }
            return values.max()! - values.min()!
        }
        func jump(_ i: Int) -> Double {
            (0..<count).map { l in
                let a = points[i].figures[l], b = points[i + 1].figures[l]
                let scale = l < relative ? max(abs(a), abs(b)) : ranges[l]
                return scale > 0 ? abs(a - b) / scale : 0
            }.max() ?? 0
        }
        for _ in 0..<extra {
            let candidates = (0..<points.count - 1).filter {
                points[$0 + 1].lambda - points[$0].lambda > minimumWidth * points[$0 + 1].lambda
            }
            guard let steepest = candidates.max(by: { jump($0) < jump($1) }), jump(steepest) > threshold else { break }
            // Six significant digits keep the knobs readable; the width floor keeps them inside.
            let mid = Double(String(format: "%.6g", (points[steepest].lambda + points[steepest + 1].lambda) / 2))!
            points.insert((mid, figures(mid)), at: steepest + 1)
        }
        return points.map(\.lambda)
    }
}

extension LambdaSweep {
    /// Looks between two λ for one whose point reaches `target`: quality at least, cost at
    /// most. `dear`'s point costs more than the target; `cheap`'s costs no more but falls short
    /// in quality. Between two λ the policy changes model a few turns at a time, so the
    /// frontier has points there that a sweep did not visit. Each try bisects the interval and
    /// keeps one end on each side of the target's cost. It stops at the first point that
    /// reaches the target; at a point dearer than the target and short of its quality (quality
    /// does not rise as λ moves towards `cheap`, so no point further on reaches it); after
    /// `tries` points; or when a midpoint (rounded to eight significant digits) repeats an end.
    /// Returns every point tried, in order.
    public static func search(dear: Double, cheap: Double, reaching target: (quality: Double, cost: Double),
                              tries: Int, point: (Double) -> (quality: Double, cost: Double))
        -> [(lambda: Double, quality: Double, cost: Double)] {
        var dear = dear, cheap = cheap
        var tried: [(lambda: Double, quality: Double, cost: Double)] = []
        while tried.count < tries {
            let mid = Double(String(format: "%.8g", (dear + cheap) / 2))!
            guard mid != dear, mid != cheap else { break }
            let p = point(mid)
            tried.append((mid, p.quality, p.cost))
            if p.quality >= target.quality && p.cost <= target.cost { break }
            if p.cost > target.cost {
                guard p.quality >= target.quality else { break }
                dear = mid
            } else {
                cheap = mid
            }
        }
        return tried
    }
}
