//! VF index sets written `0-3,8`: the device plugin's `pfNames` `#` suffix and the agent's
//! provisioning ranges.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

/// A set of VF indexes written as `0-3,8` (the device plugin's `#` suffix and our ranges).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(into = "String")]
pub struct VfRange(Vec<(u32, u32)>);

impl VfRange {
    pub fn contains(&self, vf: u32) -> bool {
        self.0.iter().any(|(a, b)| (*a..=*b).contains(&vf))
    }

    pub fn indexes(&self) -> impl Iterator<Item = u32> + '_ {
        self.0.iter().flat_map(|(a, b)| *a..=*b)
    }

    pub fn max(&self) -> Option<u32> {
        self.0.iter().map(|(_, b)| *b).max()
    }
}

impl FromStr for VfRange {
    type Err = &'static str;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let num = |t: &str| -> Result<u32, &'static str> {
            let t = t.trim();
            if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
                return Err("VF ranges are indexes like 0-3,8");
            }
            t.parse::<u32>()
                .ok()
                .filter(|n| *n < 65535)
                .ok_or("VF index out of range")
        };
        let mut parts = Vec::new();
        for part in s.split(',') {
            let (a, b) = match part.split_once('-') {
                Some((a, b)) => (num(a)?, num(b)?),
                None => {
                    let n = num(part)?;
                    (n, n)
                }
            };
            if a > b {
                return Err("a VF range must run from low to high");
            }
            parts.push((a, b));
        }
        Ok(Self(parts))
    }
}

impl fmt::Display for VfRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (a, b)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if a == b {
                write!(f, "{a}")?;
            } else {
                write!(f, "{a}-{b}")?;
            }
        }
        Ok(())
    }
}

impl From<VfRange> for String {
    fn from(r: VfRange) -> String {
        r.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vf_ranges_parse_and_print() {
        let r: VfRange = "0-3,8,10-11".parse().unwrap();
        assert_eq!(r.to_string(), "0-3,8,10-11");
        assert!(r.contains(8) && !r.contains(9));
        assert_eq!(r.max(), Some(11));
        for bad in ["", "a", "3-", "-1", "1--2", "5-2", "99999"] {
            assert!(bad.parse::<VfRange>().is_err(), "{bad:?} accepted");
        }
    }
}
