//! The pools' device-plugin servers, supervised: each runs as a task of one [`JoinSet`] owned by the
//! run loop, so a server that ends with an error or panics is noticed as it happens, logged with its
//! pool's resource name, reported as a `PoolServerDown` condition (which fails `/healthz`) and
//! started again after a bounded backoff (100 ms doubling to 5 s). The condition clears once the
//! new server listens on its socket. A pool that leaves the config is stopped and not restarted.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::{Id, JoinError, JoinSet};
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use crate::pool::Pool;
use crate::state::Condition;

/// The reason of the condition naming a pool whose server is down.
pub const POOL_SERVER_DOWN: &str = "PoolServerDown";
/// The first pause before a failed server is started again.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// The longest pause before a failed server is started again.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

type Outcome = Result<(), vfdp::Error>;

/// Why a pool's server is not serving.
#[derive(Debug)]
struct Down {
    error: String,
    /// When the server is started again; none once it has been.
    retry_at: Option<Instant>,
}

struct Served {
    tx: watch::Sender<Pool>,
    /// Stops the current incarnation of the server.
    stop: watch::Sender<bool>,
    /// The current incarnation; reports from older ones are ignored.
    generation: u64,
    /// Some while the server is down (failed, or restarted but not listening yet).
    down: Option<Down>,
    /// The backoff to use when the current incarnation fails.
    backoff: Duration,
}

/// Which pool, and which incarnation of its server, a task is.
struct TaskOf {
    name: String,
    generation: u64,
}

/// The supervised servers, by resource name.
pub struct Servers {
    plugin_dir: PathBuf,
    devinfo_dir: PathBuf,
    tasks: JoinSet<Outcome>,
    tasks_of: HashMap<Id, TaskOf>,
    served: BTreeMap<String, Served>,
    restarts: BTreeMap<String, u64>,
    next_generation: u64,
    listening_tx: mpsc::UnboundedSender<u64>,
    listening_rx: mpsc::UnboundedReceiver<u64>,
}

impl Servers {
    pub fn new(plugin_dir: PathBuf, devinfo_dir: PathBuf) -> Self {
        let (listening_tx, listening_rx) = mpsc::unbounded_channel();
        Self {
            plugin_dir,
            devinfo_dir,
            tasks: JoinSet::new(),
            tasks_of: HashMap::new(),
            served: BTreeMap::new(),
            restarts: BTreeMap::new(),
            next_generation: 0,
            listening_tx,
            listening_rx,
        }
    }

    /// The pool as its server sees it.
    pub fn pool(&self, name: &str) -> Option<Pool> {
        self.served.get(name).map(|s| s.tx.borrow().clone())
    }

    pub fn pools(&self) -> Vec<Pool> {
        self.served
            .values()
            .map(|s| s.tx.borrow().clone())
            .collect()
    }

    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.served.keys()
    }

    /// Restarts so far of the pools served, by resource name.
    pub fn restarts(&self) -> Vec<(String, u64)> {
        self.served
            .keys()
            .map(|n| (n.clone(), self.restarts.get(n).copied().unwrap_or(0)))
            .collect()
    }

    /// One `PoolServerDown` condition per pool whose server is not serving.
    pub fn conditions(&self) -> Vec<Condition> {
        self.served
            .iter()
            .filter_map(|(name, s)| {
                s.down.as_ref().map(|d| Condition {
                    object: name.clone(),
                    reason: POOL_SERVER_DOWN.into(),
                    message: format!("the pool's device-plugin server is down: {}", d.error),
                })
            })
            .collect()
    }

    /// Publishes `pool` to its server, starting one for a pool not served yet.
    pub fn publish(&mut self, pool: Pool) {
        let name = pool.full_name();
        match self.served.get(&name) {
            Some(s) => {
                s.tx.send_if_modified(|cur| {
                    if *cur == pool {
                        false
                    } else {
                        *cur = pool;
                        true
                    }
                });
            }
            None => {
                let (tx, _) = watch::channel(pool);
                let (stop, _) = watch::channel(false);
                info!(pool = %name, "serving pool");
                self.served.insert(
                    name.clone(),
                    Served {
                        tx,
                        stop,
                        generation: 0,
                        down: None,
                        backoff: FIRST_BACKOFF,
                    },
                );
                self.spawn(&name);
            }
        }
    }

    /// Stops the server of `name` for good (its pool left the config).
    pub fn remove(&mut self, name: &str) {
        if let Some(s) = self.served.remove(name) {
            info!(pool = %name, "pool removed from the config; stopping its server");
            let _ = s.stop.send(true);
        }
    }

    fn spawn(&mut self, name: &str) {
        let Some(s) = self.served.get_mut(name) else {
            return;
        };
        self.next_generation += 1;
        let generation = self.next_generation;
        let (stop, stop_rx) = watch::channel(false);
        s.stop = stop;
        s.generation = generation;
        let listening = self.listening_tx.clone();
        let handle = self.tasks.spawn(crate::serve::run_pool_reporting(
            self.plugin_dir.clone(),
            s.tx.subscribe(),
            self.devinfo_dir.clone(),
            stop_rx,
            move || {
                let _ = listening.send(generation);
            },
        ));
        self.tasks_of.insert(
            handle.id(),
            TaskOf {
                name: name.to_string(),
                generation,
            },
        );
    }

    /// Waits for something the supervisor must act on, and acts: a server ended, a restart is due,
    /// or a restarted server listens again. Returns whether what is reported changed. Never
    /// returns while there is nothing to do.
    pub async fn next(&mut self) -> bool {
        let retry_at = self
            .served
            .values()
            .filter_map(|s| s.down.as_ref().and_then(|d| d.retry_at))
            .min();
        let restart_due = async {
            match retry_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            Some(joined) = self.tasks.join_next_with_id() => self.ended(joined),
            Some(generation) = self.listening_rx.recv() => self.listening(generation),
            _ = restart_due => self.restart_due(),
        }
    }

    fn ended(&mut self, joined: Result<(Id, Outcome), JoinError>) -> bool {
        let (id, outcome) = match joined {
            Ok((id, r)) => (id, r.map_err(|e| vfcore::error::chain(&e))),
            Err(e) => (e.id(), Err(join_error(e))),
        };
        let Some(task) = self.tasks_of.remove(&id) else {
            return false;
        };
        let Some(s) = self
            .served
            .get_mut(&task.name)
            .filter(|s| s.generation == task.generation)
        else {
            // A server stopped because its pool left the config.
            if let Err(e) = outcome {
                warn!(pool = %task.name, error = %e, "stopped pool server ended with an error");
            }
            return false;
        };
        let error = match outcome {
            Err(e) => e,
            Ok(()) => "it stopped without being asked to".into(),
        };
        let backoff = s.backoff;
        s.backoff = doubled(backoff);
        error!(
            pool = %task.name,
            error = %error,
            retry_in = ?backoff,
            "pool server went down; restarting it"
        );
        s.down = Some(Down {
            error,
            retry_at: Some(Instant::now() + backoff),
        });
        true
    }

    fn restart_due(&mut self) -> bool {
        let now = Instant::now();
        let due: Vec<String> = self
            .served
            .iter_mut()
            .filter_map(|(name, s)| {
                let d = s.down.as_mut()?;
                if d.retry_at.is_none_or(|at| at > now) {
                    return None;
                }
                // Down until the new incarnation listens; not due again unless it fails.
                d.retry_at = None;
                Some(name.clone())
            })
            .collect();
        for name in &due {
            *self.restarts.entry(name.clone()).or_default() += 1;
            info!(pool = %name, "restarting pool server");
            self.spawn(name);
        }
        !due.is_empty()
    }

    fn listening(&mut self, generation: u64) -> bool {
        let Some((name, s)) = self
            .served
            .iter_mut()
            .find(|(_, s)| s.generation == generation)
        else {
            return false;
        };
        s.backoff = FIRST_BACKOFF;
        if s.down.take().is_some() {
            info!(pool = %name, "pool server is serving again");
            return true;
        }
        false
    }

    /// Stops every server and waits for them to finish.
    pub async fn stop(mut self) {
        for s in self.served.values() {
            let _ = s.stop.send(true);
        }
        while let Some(joined) = self.tasks.join_next_with_id().await {
            let (id, outcome) = match joined {
                Ok((id, Ok(()))) => (id, None),
                Ok((id, Err(e))) => (id, Some(vfcore::error::chain(&e))),
                Err(e) => (e.id(), Some(join_error(e))),
            };
            let name = self.tasks_of.remove(&id).map(|t| t.name);
            match outcome {
                None => debug!(pool = ?name, "pool server stopped"),
                Some(e) => warn!(pool = ?name, error = %e, "pool server ended with an error"),
            }
        }
    }
}

/// The pause after the next failure: twice this one, at most [`MAX_BACKOFF`].
fn doubled(backoff: Duration) -> Duration {
    (backoff * 2).min(MAX_BACKOFF)
}

fn join_error(e: JoinError) -> String {
    match e.try_into_panic() {
        Ok(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "no message".into());
            format!("its task panicked: {what}")
        }
        Err(_) => "its task was cancelled".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::tests::pool_of;

    const T: Duration = Duration::from_secs(10);
    const NAME: &str = "example.com/a";

    #[test]
    fn backoff_doubles_from_100ms_up_to_5s() {
        let mut b = FIRST_BACKOFF;
        let mut seen = vec![b];
        for _ in 0..8 {
            b = doubled(b);
            seen.push(b);
        }
        let ms: Vec<u128> = seen.iter().map(|d| d.as_millis()).collect();
        assert_eq!(ms, vec![100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
    }

    #[tokio::test]
    async fn a_panicked_server_is_described_with_its_message() {
        let mut set: JoinSet<Outcome> = JoinSet::new();
        set.spawn(async { panic!("boom") });
        let e = set.join_next().await.unwrap().unwrap_err();
        assert_eq!(join_error(e), "its task panicked: boom");
    }

    async fn next(s: &mut Servers) -> bool {
        tokio::time::timeout(T, s.next())
            .await
            .expect("the supervisor had nothing to do")
    }

    fn down(s: &Servers) -> Vec<String> {
        s.conditions()
            .into_iter()
            .map(|c| format!("{} {}", c.object, c.reason))
            .collect()
    }

    #[tokio::test]
    async fn a_failing_server_is_reported_and_restarted_until_it_serves_and_a_removed_pool_stays_stopped(
    ) {
        let dir = tempfile::tempdir().unwrap();
        let plugins = dir.path().join("device-plugins");
        let mut s = Servers::new(plugins.clone(), dir.path().join("devinfo"));
        s.publish(pool_of(NAME, Vec::new()));

        // No plugin directory: the server cannot bind its socket and fails.
        assert!(next(&mut s).await);
        assert_eq!(down(&s), vec![format!("{NAME} PoolServerDown")]);
        let message = &s.conditions()[0].message;
        assert!(message.contains("example.com_a.sock"), "{message}");
        assert_eq!(s.restarts(), vec![(NAME.to_string(), 0)]);

        // Restarted after the backoff; still down while it fails.
        assert!(next(&mut s).await);
        assert_eq!(s.restarts(), vec![(NAME.to_string(), 1)]);
        assert!(next(&mut s).await);
        assert_eq!(down(&s), vec![format!("{NAME} PoolServerDown")]);

        // The fault clears: the next restart listens and the condition goes.
        std::fs::create_dir_all(&plugins).unwrap();
        assert!(next(&mut s).await);
        assert_eq!(s.restarts(), vec![(NAME.to_string(), 2)]);
        assert!(next(&mut s).await);
        assert!(down(&s).is_empty());
        assert!(plugins.join("example.com_a.sock").exists());

        // Removed from the config: stopped, and nothing is left to restart.
        s.remove(NAME);
        assert!(!next(&mut s).await);
        assert!(s.tasks.is_empty());
        assert!(s.restarts().is_empty() && down(&s).is_empty());
        assert!(!plugins.join("example.com_a.sock").exists());
        s.stop().await;
    }
}
