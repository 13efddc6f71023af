//! Medians of the alternated rounds, and the ratios between two sides.

use crate::records::{Run, RunResult};

/// The median (the mean of the middle two for an even count); `None` for no values.
pub(crate) fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    })
}

/// Which results a row of the report is about.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Select<'a> {
    pub(crate) suite: &'a str,
    pub(crate) side: &'a str,
    pub(crate) cmd: &'a str,
    /// Only this many workers (contend).
    pub(crate) workers: Option<u64>,
    /// Only this runtime flavour.
    pub(crate) runtime: Option<&'a str>,
}

impl<'a> Select<'a> {
    pub(crate) fn new(suite: &'a str, side: &'a str, cmd: &'a str) -> Self {
        Select {
            suite,
            side,
            cmd,
            workers: None,
            runtime: None,
        }
    }

    pub(crate) fn workers(self, w: u64) -> Self {
        Select {
            workers: Some(w),
            ..self
        }
    }

    pub(crate) fn runtime(self, r: &'a str) -> Self {
        Select {
            runtime: Some(r),
            ..self
        }
    }

    pub(crate) fn side(self, side: &'a str) -> Self {
        Select { side, ..self }
    }

    fn matches(&self, r: &RunResult) -> bool {
        r.suite == self.suite
            && r.side == self.side
            && r.cmd == self.cmd
            && self.workers.is_none_or(|w| r.workers() == w)
            && self
                .runtime
                .is_none_or(|rt| r.runtime.as_deref() == Some(rt))
    }

    /// The matching results, in file order.
    pub(crate) fn results<'r>(&self, run: &'r Run) -> Vec<&'r RunResult> {
        run.results.iter().filter(|r| self.matches(r)).collect()
    }

    /// Every value of `field` over the matching results.
    pub(crate) fn values(&self, run: &Run, field: &str) -> Vec<f64> {
        self.results(run)
            .into_iter()
            .filter_map(|r| r.num(field))
            .collect()
    }

    /// The median of `field` over the matching results.
    pub(crate) fn median(&self, run: &Run, field: &str) -> Option<f64> {
        median(&self.values(run, field))
    }

    /// The median over the matching results of `field(result)` per operation: the
    /// result's `per_field` divided by its `ops`.
    pub(crate) fn median_per_op(&self, run: &Run, per_field: &str) -> Option<f64> {
        let v: Vec<f64> = self
            .results(run)
            .into_iter()
            .filter_map(|r| Some(r.num(per_field)? / r.num("ops").filter(|&o| o > 0.0)?))
            .collect();
        median(&v)
    }
}

/// The ratio `a / b` of one field between two selections, round by round (the rounds
/// alternate which side runs first, so a pair shares the machine's state): the median of
/// the per-round ratios, with their smallest and largest. Rounds one side lacks are left out.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Ratio {
    pub(crate) median: f64,
    pub(crate) min: f64,
    pub(crate) max: f64,
    pub(crate) rounds: usize,
}

pub(crate) fn paired_ratio(run: &Run, a: Select<'_>, b: Select<'_>, field: &str) -> Option<Ratio> {
    let bs = b.results(run);
    let ratios: Vec<f64> = a
        .results(run)
        .into_iter()
        .filter_map(|ra| {
            let rb = bs.iter().find(|rb| rb.round == ra.round)?;
            let (x, y) = (ra.num(field)?, rb.num(field)?);
            (y != 0.0).then_some(x / y)
        })
        .collect();
    let median = median(&ratios)?;
    Some(Ratio {
        median,
        min: ratios.iter().copied().fold(f64::INFINITY, f64::min),
        max: ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        rounds: ratios.len(),
    })
}

/// The worker counts of the contend results of a selection, ascending.
pub(crate) fn worker_counts(run: &Run, sel: Select<'_>) -> Vec<u64> {
    let mut w: Vec<u64> = run
        .results
        .iter()
        .filter(|r| r.suite == sel.suite && r.cmd == sel.cmd)
        .map(RunResult::workers)
        .collect();
    w.sort_unstable();
    w.dedup();
    w
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::parse;

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[f64::NAN, 5.0]), Some(5.0));
    }

    #[test]
    fn ratios_pair_rounds_and_skip_unpaired_ones() {
        let run = parse(
            r#"{"type":"result","suite":"etcd","side":"coord","round":1,"cmd":"contend","workers":2,"ops_per_s":400}
{"type":"result","suite":"etcd","side":"go","round":1,"cmd":"contend","workers":2,"ops_per_s":20}
{"type":"result","suite":"etcd","side":"go","round":2,"cmd":"contend","workers":2,"ops_per_s":25}
{"type":"result","suite":"etcd","side":"coord","round":2,"cmd":"contend","workers":2,"ops_per_s":250}
{"type":"result","suite":"etcd","side":"coord","round":3,"cmd":"contend","workers":2,"ops_per_s":999}
{"type":"result","suite":"etcd","side":"coord","round":1,"cmd":"contend","workers":8,"ops_per_s":1}"#,
        )
        .unwrap();
        let coord = Select::new("etcd", "coord", "contend").workers(2);
        let r = paired_ratio(&run, coord, coord.side("go"), "ops_per_s").unwrap();
        assert_eq!(r.rounds, 2);
        assert_eq!((r.min, r.max, r.median), (10.0, 20.0, 15.0));
        assert_eq!(coord.median(&run, "ops_per_s"), Some(400.0));
        assert_eq!(worker_counts(&run, coord), [2, 8]);
        let none = Select::new("redis", "coord", "contend");
        assert_eq!(
            paired_ratio(&run, none, none.side("raw"), "ops_per_s"),
            None
        );
    }
}
