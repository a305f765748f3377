//! The connectivity matrix a policy test prints when it fails.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use super::{PodId, Topology};

/// What [`Topology::matrix`] tries for each pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    Ping,
    Tcp(u16),
    Udp(u16),
}

impl Probe {
    fn letter(self) -> char {
        match self {
            Probe::Ping => 'P',
            Probe::Tcp(_) => 'T',
            Probe::Udp(_) => 'U',
        }
    }
}

/// Connectivity from each pod (rows) to each address (columns), per probe.
pub struct Matrix {
    rows: Vec<String>,
    cols: Vec<(String, IpAddr)>,
    probes: Vec<Probe>,
    results: HashMap<(PodId, usize, usize), bool>,
}

impl Matrix {
    /// Whether `probe` from `src` reached `dst` (None when it was not probed).
    pub fn get(&self, src: PodId, dst: IpAddr, probe: Probe) -> Option<bool> {
        let c = self.cols.iter().position(|(_, ip)| *ip == dst)?;
        let k = self.probes.iter().position(|p| *p == probe)?;
        self.results.get(&(src, c, k)).copied()
    }

    /// The probes that failed, as `a -> b:eth0 10.91.2.10 T`.
    pub fn denied(&self) -> Vec<String> {
        let mut out: Vec<_> = self
            .results
            .iter()
            .filter(|(_, ok)| !**ok)
            .map(|(&(src, c, k), _)| {
                format!(
                    "{} -> {} {} {}",
                    self.rows[src.0],
                    self.cols[c].0,
                    self.cols[c].1,
                    self.probes[k].letter()
                )
            })
            .collect();
        out.sort();
        out
    }

    pub fn all_allowed(&self) -> bool {
        !self.results.is_empty() && self.results.values().all(|ok| *ok)
    }
}

impl fmt::Display for Matrix {
    /// One line per destination address, one column per source pod; a cell shows each probe's
    /// letter when it passed and `-` when it did not (`.`: not probed, the pod itself).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let legend: Vec<String> = self
            .probes
            .iter()
            .map(|p| match p {
                Probe::Ping => "P=ping".to_string(),
                Probe::Tcp(port) => format!("T=tcp/{port}"),
                Probe::Udp(port) => format!("U=udp/{port}"),
            })
            .collect();
        let width = self.probes.len().max(1) + 2;
        writeln!(f, "to \\ from ({})", legend.join(" "))?;
        write!(f, "{:<34}", "")?;
        for r in &self.rows {
            write!(f, "{r:>width$}")?;
        }
        writeln!(f)?;
        for (c, (label, ip)) in self.cols.iter().enumerate() {
            write!(f, "{:<34}", format!("{label} {ip}"))?;
            for src in 0..self.rows.len() {
                let cell: String = (0..self.probes.len())
                    .map(|k| match self.results.get(&(PodId(src), c, k)) {
                        Some(true) => self.probes[k].letter(),
                        Some(false) => '-',
                        None => '.',
                    })
                    .collect();
                write!(f, "{cell:>width$}")?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

impl Topology {
    /// Probes every pod against every address of every other pod it has a path to (node
    /// networks are routed to all; an in-pod link only joins its two pods), in parallel; the
    /// result prints as a table.
    pub fn matrix(&self, probes: &[Probe], timeout: Duration) -> Matrix {
        let mut cols = Vec::new();
        for (id, p) in self.pods() {
            for i in &p.ifaces {
                for ip in [IpAddr::from(i.v4), IpAddr::from(i.v6)] {
                    cols.push((id, format!("{}:{}", p.label, i.ifname), ip, &i.network));
                }
            }
        }
        let mut jobs = Vec::new();
        for (src, _) in self.pods() {
            for (c, (dst_pod, _, ip, network)) in cols.iter().enumerate() {
                let routed = network.starts_with("net")
                    || self.pod(src).ifaces.iter().any(|i| &i.network == *network);
                if *dst_pod != src && routed {
                    for (k, probe) in probes.iter().enumerate() {
                        jobs.push((src, c, *ip, k, *probe));
                    }
                }
            }
        }
        let mut results = HashMap::new();
        for chunk in jobs.chunks(16) {
            std::thread::scope(|s| {
                let handles: Vec<_> = chunk
                    .iter()
                    .map(|&(src, c, ip, k, probe)| {
                        let h = s.spawn(move || match probe {
                            Probe::Ping => self.ping_within(src, ip, timeout),
                            Probe::Tcp(port) => self.tcp_connect(src, ip, port, timeout),
                            Probe::Udp(port) => self.udp(src, ip, port, timeout),
                        });
                        ((src, c, k), h)
                    })
                    .collect();
                for (key, h) in handles {
                    results.insert(key, h.join().unwrap_or(false));
                }
            });
        }
        Matrix {
            rows: self.pods.iter().map(|p| p.label.clone()).collect(),
            cols: cols.iter().map(|(_, l, ip, _)| (l.clone(), *ip)).collect(),
            probes: probes.to_vec(),
            results,
        }
    }
}
