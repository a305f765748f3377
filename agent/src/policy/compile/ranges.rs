//! Interval arithmetic for nftables interval sets: a CIDR as an interval of addresses, a CIDR
//! minus its `except` blocks, and disjoint decompositions (the kernel refuses overlapping
//! elements in an interval set, so every set is built from disjoint pieces).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::policy::model::IpCidr;

/// An address family: each has its own sets (`ipv4_addr`, `ipv6_addr`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(addr: &IpAddr) -> Self {
        match addr {
            IpAddr::V4(_) => Self::V4,
            IpAddr::V6(_) => Self::V6,
        }
    }

    pub fn bits(self) -> u32 {
        match self {
            Self::V4 => 32,
            Self::V6 => 128,
        }
    }

    /// The highest address, as a number.
    pub fn max(self) -> u128 {
        match self {
            Self::V4 => u128::from(u32::MAX),
            Self::V6 => u128::MAX,
        }
    }

    /// Every address of the family.
    pub fn all(self) -> Span {
        Span {
            lo: 0,
            hi: self.max(),
        }
    }

    /// The address `value` stands for (truncated to the family's width).
    pub fn addr(self, value: u128) -> IpAddr {
        match self {
            Self::V4 => IpAddr::V4(Ipv4Addr::from((value & u128::from(u32::MAX)) as u32)),
            Self::V6 => IpAddr::V6(Ipv6Addr::from(value)),
        }
    }
}

/// A value per address family.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PerFamily<T> {
    pub v4: T,
    pub v6: T,
}

impl<T> PerFamily<T> {
    pub fn get(&self, family: Family) -> &T {
        match family {
            Family::V4 => &self.v4,
            Family::V6 => &self.v6,
        }
    }

    pub fn get_mut(&mut self, family: Family) -> &mut T {
        match family {
            Family::V4 => &mut self.v4,
            Family::V6 => &mut self.v6,
        }
    }
}

/// An inclusive interval of numbers: addresses (as integers) or ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Span {
    pub lo: u128,
    pub hi: u128,
}

impl Span {
    /// `None` when `lo > hi`.
    pub fn new(lo: u128, hi: u128) -> Option<Self> {
        (lo <= hi).then_some(Self { lo, hi })
    }

    pub fn one(value: u128) -> Self {
        Self {
            lo: value,
            hi: value,
        }
    }

    fn overlaps(&self, other: &Span) -> bool {
        self.lo <= other.hi && other.lo <= self.hi
    }

    /// The prefix length when the span is exactly one CIDR block of `family`.
    pub fn prefix_len(&self, family: Family) -> Option<u8> {
        let bits = family.bits();
        if self.lo == 0 && self.hi == family.max() {
            return Some(0);
        }
        let size = (self.hi - self.lo).checked_add(1)?;
        if !size.is_power_of_two() || self.lo % size != 0 {
            return None;
        }
        u8::try_from(bits - size.trailing_zeros()).ok()
    }
}

/// An address as a number of its family.
pub fn addr_value(addr: &IpAddr) -> (Family, u128) {
    match addr {
        IpAddr::V4(a) => (Family::V4, u128::from(u32::from(*a))),
        IpAddr::V6(a) => (Family::V6, u128::from(*a)),
    }
}

/// The addresses of a CIDR block; host bits of the address are ignored (`10.1.1.5/24` is
/// `10.1.1.0/24`).
pub fn cidr_span(cidr: &IpCidr) -> (Family, Span) {
    let (family, value) = addr_value(&cidr.addr);
    let host_bits = family.bits().saturating_sub(u32::from(cidr.prefix));
    if host_bits >= 128 {
        return (family, family.all());
    }
    let size_less_one = (1u128 << host_bits) - 1;
    let lo = value & !size_less_one;
    (
        family,
        Span {
            lo,
            hi: lo | size_less_one,
        },
    )
}

/// Sorted, disjoint spans covering the same numbers; touching spans are joined.
pub fn merge(mut spans: Vec<Span>) -> Vec<Span> {
    spans.sort_unstable();
    let mut out: Vec<Span> = Vec::with_capacity(spans.len());
    for s in spans {
        match out.last_mut() {
            Some(last) if s.lo <= last.hi.saturating_add(1) => last.hi = last.hi.max(s.hi),
            _ => out.push(s),
        }
    }
    out
}

/// `spans` less every number in `cut`.
pub fn subtract(spans: &[Span], cut: &Span) -> Vec<Span> {
    let mut out = Vec::with_capacity(spans.len() + 1);
    for s in spans {
        if !s.overlaps(cut) {
            out.push(*s);
            continue;
        }
        if cut.lo > s.lo {
            out.push(Span {
                lo: s.lo,
                hi: cut.lo - 1,
            });
        }
        if cut.hi < s.hi {
            out.push(Span {
                lo: cut.hi + 1,
                hi: s.hi,
            });
        }
    }
    out
}

/// An ipBlock: `cidr` less each `except` (an except of the other family, or outside the block,
/// removes nothing). Sorted and disjoint.
pub fn cidr_minus(cidr: &IpCidr, excepts: &[IpCidr]) -> (Family, Vec<Span>) {
    let (family, span) = cidr_span(cidr);
    let mut spans = vec![span];
    for e in excepts {
        let (f, cut) = cidr_span(e);
        if f == family {
            spans = subtract(&spans, &cut);
        }
    }
    (family, merge(spans))
}

/// Rectangles (`x` × `y`) covering exactly the union of `rects`, pairwise disjoint, sorted by
/// `x` then `y`. The `x` axis is cut into bands at every rectangle edge; each band gets the
/// merged `y` spans of the rectangles over it; neighbouring bands with the same `y` spans are
/// joined. Band on the axis with fewer distinct edges (ports rather than addresses) to keep it
/// cheap: the cost is bands × rectangles.
pub fn disjoint_rects(rects: Vec<(Span, Span)>) -> Vec<(Span, Span)> {
    let mut edges: Vec<u128> = rects
        .iter()
        .flat_map(|(x, _)| [Some(x.lo), x.hi.checked_add(1)])
        .flatten()
        .collect();
    edges.sort_unstable();
    edges.dedup();
    // (band, y spans over it), bands in order.
    let mut bands: Vec<(Span, Vec<Span>)> = Vec::new();
    for (i, &start) in edges.iter().enumerate() {
        let end = match edges.get(i + 1) {
            Some(next) => next - 1,
            None => u128::MAX,
        };
        let ys = merge(
            rects
                .iter()
                .filter(|(x, _)| x.lo <= start && x.hi >= end)
                .map(|(_, y)| *y)
                .collect(),
        );
        if ys.is_empty() {
            continue;
        }
        match bands.last_mut() {
            Some((band, prev)) if band.hi.checked_add(1) == Some(start) && *prev == ys => {
                band.hi = end;
            }
            _ => bands.push((Span { lo: start, hi: end }, ys)),
        }
    }
    bands
        .into_iter()
        .flat_map(|(x, ys)| ys.into_iter().map(move |y| (x, y)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> IpCidr {
        s.parse().unwrap()
    }

    fn v4(s: &str) -> u128 {
        addr_value(&s.parse().unwrap()).1
    }

    fn show(family: Family, spans: &[Span]) -> Vec<String> {
        spans
            .iter()
            .map(|s| match s.prefix_len(family) {
                Some(len) => format!("{}/{len}", family.addr(s.lo)),
                None => format!("{}-{}", family.addr(s.lo), family.addr(s.hi)),
            })
            .collect()
    }

    fn minus(c: &str, excepts: &[&str]) -> Vec<String> {
        let excepts: Vec<IpCidr> = excepts.iter().map(|e| cidr(e)).collect();
        let (family, spans) = cidr_minus(&cidr(c), &excepts);
        show(family, &spans)
    }

    #[test]
    fn a_cidr_ignores_host_bits_and_covers_its_block() {
        let (f, s) = cidr_span(&cidr("10.1.1.5/24"));
        assert_eq!(f, Family::V4);
        assert_eq!((s.lo, s.hi), (v4("10.1.1.0"), v4("10.1.1.255")));
        assert_eq!(cidr_span(&cidr("0.0.0.0/0")).1, Family::V4.all());
        assert_eq!(cidr_span(&cidr("::/0")).1, Family::V6.all());
        assert_eq!(
            cidr_span(&cidr("fd00::1/128")).1.prefix_len(Family::V6),
            Some(128)
        );
    }

    #[test]
    fn except_equal_to_the_block_leaves_nothing() {
        assert!(minus("10.0.0.0/8", &["10.0.0.0/8"]).is_empty());
        assert!(minus("fd00::/64", &["fd00::/64"]).is_empty());
        assert!(minus("0.0.0.0/0", &["0.0.0.0/0"]).is_empty());
        assert!(minus("::/0", &["::/0"]).is_empty());
    }

    #[test]
    fn except_outside_the_block_or_of_the_other_family_removes_nothing() {
        assert_eq!(minus("10.0.0.0/8", &["11.0.0.0/8"]), ["10.0.0.0/8"]);
        assert_eq!(minus("10.0.0.0/8", &["::/0"]), ["10.0.0.0/8"]);
        assert_eq!(minus("fd00::/64", &["fd01::/64"]), ["fd00::/64"]);
    }

    #[test]
    fn except_larger_than_the_block_removes_all_of_it() {
        assert!(minus("10.1.0.0/16", &["10.0.0.0/8"]).is_empty());
    }

    #[test]
    fn nested_and_edge_excepts() {
        assert_eq!(
            minus("10.0.0.0/8", &["10.1.0.0/16", "10.1.2.0/24"]),
            ["10.0.0.0/16", "10.2.0.0-10.255.255.255"]
        );
        // The first and last address of the whole space.
        assert_eq!(
            minus("0.0.0.0/0", &["0.0.0.0/32", "255.255.255.255/32"]),
            ["0.0.0.1-255.255.255.254"]
        );
        assert_eq!(
            minus("::/0", &["::/1"]),
            ["8000::/1"],
            "the upper half of the v6 space"
        );
        assert_eq!(
            minus(
                "::/0",
                &["::/128", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128"]
            ),
            ["::1-ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe"]
        );
        assert_eq!(
            minus("fd00::/64", &["fd00::/65", "fd00::8000:0:0:0/66"]),
            ["fd00::c000:0:0:0/66"]
        );
    }

    #[test]
    fn merge_joins_overlapping_and_touching_spans() {
        let s = |lo, hi| Span { lo, hi };
        assert_eq!(
            merge(vec![s(10, 20), s(0, 4), s(5, 6), s(15, 30), s(40, 40)]),
            [s(0, 6), s(10, 30), s(40, 40)]
        );
        assert_eq!(merge(vec![s(0, u128::MAX), s(5, 6)]), [s(0, u128::MAX)]);
    }

    #[test]
    fn disjoint_rects_cover_the_union_without_overlap() {
        let s = |lo, hi| Span { lo, hi };
        // Ports 80-90 from 0-99 and ports 85-100 from 50-199.
        let out = disjoint_rects(vec![(s(80, 90), s(0, 99)), (s(85, 100), s(50, 199))]);
        assert_eq!(
            out,
            [
                (s(80, 84), s(0, 99)),
                (s(85, 90), s(0, 199)),
                (s(91, 100), s(50, 199)),
            ]
        );
        for (i, a) in out.iter().enumerate() {
            for b in &out[i + 1..] {
                assert!(!(a.0.overlaps(&b.0) && a.1.overlaps(&b.1)), "{a:?} {b:?}");
            }
        }
        // Identical bands are joined; a rectangle reaching the top edge is kept.
        assert_eq!(
            disjoint_rects(vec![(s(0, 9), s(1, 1)), (s(10, u128::MAX), s(1, 1))]),
            [(s(0, u128::MAX), s(1, 1))]
        );
    }

    #[test]
    fn prefix_len_only_for_exact_blocks() {
        let s = |lo, hi| Span { lo, hi };
        assert_eq!(s(0, 255).prefix_len(Family::V4), Some(24));
        assert_eq!(s(256, 511).prefix_len(Family::V4), Some(24));
        assert_eq!(s(1, 256).prefix_len(Family::V4), None);
        assert_eq!(s(0, 2).prefix_len(Family::V4), None);
        assert_eq!(s(7, 7).prefix_len(Family::V6), Some(128));
    }
}
