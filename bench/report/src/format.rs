//! Numbers as the report prints them.

/// A duration in nanoseconds, in the unit that keeps 3 significant digits readable.
pub(crate) fn ns(v: Option<f64>) -> String {
    let Some(v) = v else {
        return "–".into();
    };
    if v >= 1e9 {
        format!("{:.2} s", v / 1e9)
    } else if v >= 1e6 {
        format!("{:.2} ms", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1} µs", v / 1e3)
    } else {
        format!("{v:.0} ns")
    }
}

/// A rate, with thousands separators and no decimals above 100.
pub(crate) fn rate(v: Option<f64>) -> String {
    match v {
        None => "–".into(),
        Some(v) if v < 100.0 => format!("{v:.1}"),
        Some(v) => thousands(v.round() as u64),
    }
}

/// A ratio as `1.23x`.
pub(crate) fn ratio(v: Option<f64>) -> String {
    v.map_or_else(|| "–".into(), |v| format!("{v:.2}x"))
}

pub(crate) fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_print_in_readable_units() {
        assert_eq!(ns(Some(950.0)), "950 ns");
        assert_eq!(ns(Some(45_300.0)), "45.3 µs");
        assert_eq!(ns(Some(2_345_000.0)), "2.35 ms");
        assert_eq!(ns(Some(3.2e9)), "3.20 s");
        assert_eq!(ns(None), "–");
        assert_eq!(rate(Some(21.04)), "21.0");
        assert_eq!(rate(Some(1_234_567.4)), "1,234,567");
        assert_eq!(ratio(Some(4.048)), "4.05x");
        assert_eq!(thousands(100), "100");
        assert_eq!(thousands(1000), "1,000");
    }
}
