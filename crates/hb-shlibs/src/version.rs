//! Debian version comparison (policy 5.6.12): epoch, then upstream version, then
//! revision, each compared as alternating runs of non-digits (where `~` sorts before
//! everything, even the end, and letters before other characters) and numbers.

use std::cmp::Ordering;

/// `(epoch, upstream, revision)` of a version string.
fn parts(v: &str) -> (u64, &str, &str) {
    let (epoch, rest) = match v.split_once(':') {
        Some((e, r)) if e.bytes().all(|b| b.is_ascii_digit()) && !e.is_empty() => (e.parse().unwrap_or(u64::MAX), r),
        _ => (0, v),
    };
    let (upstream, revision) = rest.rsplit_once('-').unwrap_or((rest, ""));
    (epoch, upstream, revision)
}

fn order(c: Option<u8>) -> i32 {
    match c {
        Some(b'~') => -1,
        None => 0,
        Some(c) if c.is_ascii_alphabetic() => i32::from(c),
        Some(c) => i32::from(c) + 256,
    }
}

fn compare_part(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    while !a.is_empty() || !b.is_empty() {
        // Non-digit runs, character by character.
        loop {
            let (ca, cb) = (
                a.first().copied().filter(|c| !c.is_ascii_digit()),
                b.first().copied().filter(|c| !c.is_ascii_digit()),
            );
            if ca.is_none() && cb.is_none() {
                break;
            }
            match order(ca).cmp(&order(cb)) {
                Ordering::Equal => {
                    a = a.get(1..).unwrap_or_default();
                    b = b.get(1..).unwrap_or_default();
                }
                other => return other,
            }
        }
        // Digit runs, as numbers (leading zeros ignored, any length).
        let da = a.iter().take_while(|c| c.is_ascii_digit()).count();
        let db = b.iter().take_while(|c| c.is_ascii_digit()).count();
        let (na, nb) = (a.get(..da).unwrap_or_default(), b.get(..db).unwrap_or_default());
        let trim = |n: &[u8]| -> Vec<u8> { n.iter().copied().skip_while(|c| *c == b'0').collect() };
        let (ta, tb) = (trim(na), trim(nb));
        match ta.len().cmp(&tb.len()).then_with(|| ta.cmp(&tb)) {
            Ordering::Equal => {}
            other => return other,
        }
        a = a.get(da..).unwrap_or_default();
        b = b.get(db..).unwrap_or_default();
    }
    Ordering::Equal
}

/// Compares two Debian versions.
pub fn compare(a: &str, b: &str) -> Ordering {
    let (ea, ua, ra) = parts(a);
    let (eb, ub, rb) = parts(b);
    ea.cmp(&eb).then_with(|| compare_part(ua, ub)).then_with(|| compare_part(ra, rb))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_as_dpkg_does() {
        for (a, b, want) in [
            ("2.14", "2.4", Ordering::Greater),
            ("2.2.5", "2.14", Ordering::Less),
            ("1.0~rc1", "1.0", Ordering::Less),
            ("1.0", "1.0+b1", Ordering::Less),
            ("1:0.1", "2.0", Ordering::Greater),
            ("1.0-1", "1.0-2", Ordering::Less),
            ("14~", "14", Ordering::Less),
            ("1.01", "1.1", Ordering::Equal),
            ("1.0a", "1.0", Ordering::Greater),
            ("1.0", "1.0.0", Ordering::Less),
            ("12.0.1", "12", Ordering::Greater),
        ] {
            assert_eq!(compare(a, b), want, "{a} vs {b}");
            assert_eq!(compare(b, a), want.reverse(), "{b} vs {a}");
        }
    }

    proptest::proptest! {
        #[test]
        fn comparison_is_antisymmetric_and_never_panics(a in "[0-9a-z.+~:-]{0,12}", b in "[0-9a-z.+~:-]{0,12}") {
            proptest::prop_assert_eq!(compare(&a, &b), compare(&b, &a).reverse());
        }
    }
}
