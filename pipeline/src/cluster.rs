//! Timely's process settings and where each stream runs.
//!
//! N processes (on one machine or several) form one dataflow over timely's own TCP engine. A process connects to
//! the lower-numbered processes and waits for the higher-numbered ones; timely itself retries forever, so capflow
//! builds the connections on a side thread and gives up after `peer_timeout` with an error that names the
//! addresses. Streams are placed on workers by expected cost (pixels × frames per second), largest first, each on the
//! least-loaded worker: every process computes the same placement from the same config without talking.

use std::any::Any;
use std::collections::BTreeMap;
use std::net::{TcpListener, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use timely::communication::allocator::AllocatorBuilder;
use timely::{CommunicationConfig, WorkerConfig};

use crate::config::{ClusterConfig, Config, StreamConfig};

/// Timely's process settings: `[cluster]` in the config, overridden by `-w`, `-n`, `-p`, `-h` on the command line.
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterArgs {
    /// Worker threads per process.
    pub workers: usize,
    /// Number of processes.
    pub processes: usize,
    /// This process's index.
    pub process: usize,
    /// File with one `host:port` per process; wins over `hosts`.
    pub hostfile: Option<PathBuf>,
    /// `host:port` per process (default: localhost:2101, 2102, ...).
    pub hosts: Vec<String>,
    /// How long to wait for the peers to connect.
    pub peer_timeout: Duration,
}

impl Default for ClusterArgs {
    fn default() -> Self {
        ClusterArgs::from_config(&ClusterConfig::default())
    }
}

/// The communication a cluster built: one allocator builder per local worker, and the guard that keeps its network
/// threads alive.
pub struct Connected {
    /// One per local worker.
    pub builders: Vec<AllocatorBuilder>,
    /// Network threads' guard; dropped after the workers.
    pub guard: Box<dyn Any + Send>,
    /// Worker settings.
    pub worker: WorkerConfig,
}

impl ClusterArgs {
    /// The settings a config's `[cluster]` table gives (this process is index 0 until `-p` says otherwise).
    pub fn from_config(config: &ClusterConfig) -> Self {
        ClusterArgs {
            workers: config.workers,
            processes: config.processes,
            process: 0,
            hostfile: None,
            hosts: config.hosts.clone(),
            peer_timeout: Duration::from_secs_f64(config.peer_timeout_s.clamp(0.5, 86_400.0)),
        }
    }

    /// Every process's `host:port`, in process order.
    pub fn addresses(&self) -> anyhow::Result<Vec<String>> {
        let listed = match &self.hostfile {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading hostfile {}", path.display()))?;
                let lines: Vec<String> = text
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(String::from)
                    .collect();
                if lines.len() < self.processes {
                    bail!(
                        "hostfile {} lists {} addresses but -n is {}: give one host:port per process",
                        path.display(),
                        lines.len(),
                        self.processes
                    );
                }
                lines
            }
            None if !self.hosts.is_empty() => {
                if self.hosts.len() < self.processes {
                    bail!(
                        "cluster.hosts lists {} addresses but there are {} processes: give one host:port per process",
                        self.hosts.len(),
                        self.processes
                    );
                }
                self.hosts.clone()
            }
            None => (0..self.processes)
                .map(|i| format!("localhost:{}", 2101 + i))
                .collect(),
        };
        Ok(listed.into_iter().take(self.processes).collect())
    }

    /// Worker threads of every process on this process's host (its own included), which share its cores: ONNX
    /// Runtime threads are divided among them, so that two processes on one 2-core machine do not run two threads
    /// each. Hosts are compared by name, with `localhost`, `127.0.0.1` and `::1` taken as one; a host listed under
    /// two names counts as two (`model.intra_threads` then sets the threads by hand). Without valid addresses, this
    /// process's workers.
    pub fn workers_on_this_host(&self) -> usize {
        let Ok(addresses) = self.addresses() else {
            return self.workers;
        };
        let host = |address: &str| {
            let name = address
                .rsplit_once(':')
                .map_or(address, |(host, _)| host)
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_ascii_lowercase();
            match name.as_str() {
                "localhost" | "127.0.0.1" | "::1" => "localhost".to_owned(),
                _ => name,
            }
        };
        let Some(own) = addresses.get(self.process).map(|a| host(a)) else {
            return self.workers;
        };
        let processes = addresses.iter().filter(|a| host(a) == own).count().max(1);
        self.workers * processes
    }

    /// The timely configuration these settings describe.
    pub fn timely_config(&self) -> anyhow::Result<timely::Config> {
        if self.workers == 0 || self.processes == 0 || self.process >= self.processes {
            bail!(
                "cluster settings need -w >= 1, -n >= 1 and 0 <= -p < -n (got -w {} -n {} -p {})",
                self.workers,
                self.processes,
                self.process
            );
        }
        let communication = if self.processes > 1 {
            CommunicationConfig::Cluster {
                threads: self.workers,
                process: self.process,
                addresses: self.addresses()?,
                report: false,
                zerocopy: false,
            }
        } else if self.workers > 1 {
            CommunicationConfig::Process(self.workers)
        } else {
            CommunicationConfig::Thread
        };
        Ok(timely::Config {
            communication,
            worker: WorkerConfig::default(),
        })
    }

    /// Builds the communication: at once for one process; for a cluster, once every peer is connected, or an error
    /// naming the peers after `peer_timeout`.
    pub fn connect(&self) -> anyhow::Result<Connected> {
        let config = self.timely_config()?;
        let CommunicationConfig::Cluster {
            process, addresses, ..
        } = &config.communication
        else {
            let (builders, guard) = config
                .communication
                .try_build()
                .map_err(|e| anyhow::anyhow!("starting timely workers: {e}"))?;
            return Ok(Connected {
                builders,
                guard,
                worker: config.worker,
            });
        };
        let (me, addresses) = (*process, addresses.clone());
        check_addresses(me, &addresses)?;
        let (tx, rx) = mpsc::channel();
        let communication = config.communication;
        // Timely retries a refused connection every second, forever; the side thread is left behind on timeout (the
        // process exits with the error).
        std::thread::Builder::new()
            .name("capflow-connect".into())
            .spawn(move || {
                let _ = tx.send(communication.try_build());
            })
            .context("starting the cluster connection thread")?;
        let started = Instant::now();
        match rx.recv_timeout(self.peer_timeout) {
            Ok(Ok((builders, guard))) => {
                tracing::info!(
                    process = me,
                    processes = addresses.len(),
                    seconds = started.elapsed().as_secs_f64(),
                    "cluster connected"
                );
                Ok(Connected {
                    builders,
                    guard,
                    worker: config.worker,
                })
            }
            Ok(Err(e)) => bail!(
                "process {me} could not join the cluster at {}: {e} (check this process's line in the hostfile or \
                 cluster.hosts)",
                addresses[me]
            ),
            Err(_) => bail!("{}", unreachable_peers(me, &addresses, self.peer_timeout)),
        }
    }
}

/// Errors timely would only report after connecting (or never): a peer host that does not resolve, and an own
/// address this machine cannot listen on.
fn check_addresses(me: usize, addresses: &[String]) -> anyhow::Result<()> {
    for (i, address) in addresses.iter().enumerate() {
        if let Err(e) = address.to_socket_addrs() {
            bail!(
                "process {i}'s address {address:?} does not resolve ({e}): the hostfile or cluster.hosts needs one \
                 host:port per line, in process order"
            );
        }
    }
    // Listening once and letting go leaves nothing behind (no connection was accepted), and timely binds again.
    for own in addresses[me].split_whitespace() {
        TcpListener::bind(own).with_context(|| {
            format!(
                "process {me} cannot listen at its own address {own}: that line of the hostfile (or cluster.hosts) \
                 must be an address of this machine with a free port"
            )
        })?;
    }
    Ok(())
}

/// The error for peers that did not connect in time: whom this process dials and whom it waits for.
fn unreachable_peers(me: usize, addresses: &[String], waited: Duration) -> String {
    let dials: Vec<String> = addresses[..me]
        .iter()
        .enumerate()
        .map(|(i, a)| format!("process {i} at {a}"))
        .collect();
    let awaits: Vec<String> = addresses[me + 1..]
        .iter()
        .enumerate()
        .map(|(i, a)| format!("process {} (from {a})", me + 1 + i))
        .collect();
    let mut parts = Vec::new();
    if !dials.is_empty() {
        parts.push(format!("it connects to {}", dials.join(", ")));
    }
    if !awaits.is_empty() {
        parts.push(format!(
            "it waits at {} for {}",
            addresses[me],
            awaits.join(", ")
        ));
    }
    format!(
        "process {me} could not form the cluster within {:.0} s: {}. Check that every process is started with the \
         same -n and hostfile, that each address is right and reachable (firewall), and raise \
         cluster.peer_timeout_s (--peer-timeout) if processes start far apart",
        waited.as_secs_f64(),
        parts.join("; ")
    )
}

/// Which worker (of `peers`, across all processes) decodes each stream.
///
/// Streams of the run's config are placed largest expected cost first, each on the least-loaded worker (ties: the
/// lower index, then the stream id), so the placement is the same in every process. Streams a reload adds go to the
/// worker their id hashes to, which moves no running stream; a restart rebalances.
#[derive(Clone, Debug)]
pub struct Placement {
    placed: BTreeMap<String, usize>,
    peers: usize,
}

impl Placement {
    /// The placement of `config`'s streams over `peers` workers.
    pub fn new(config: &Config, peers: usize) -> Self {
        let peers = peers.max(1);
        let mut costs: Vec<(u64, &str)> = config
            .streams
            .iter()
            .map(|s| (expected_cost(config, s), s.id.as_str()))
            .collect();
        costs.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
        let mut load = vec![0u64; peers];
        let mut placed = BTreeMap::new();
        for (cost, id) in costs {
            let worker = (0..peers)
                .min_by_key(|&w| (load[w], w))
                .expect("at least one worker");
            load[worker] = load[worker].saturating_add(cost);
            placed.insert(id.to_string(), worker);
        }
        Placement { placed, peers }
    }

    /// The worker that decodes stream `id`.
    pub fn owner(&self, id: &str) -> usize {
        self.placed
            .get(id)
            .copied()
            .unwrap_or_else(|| hashed_owner(id, self.peers))
    }
}

/// Pixels per second a stream is expected to bring: its profile's frame size (1920×1080 when unknown) × its fps.
fn expected_cost(config: &Config, stream: &StreamConfig) -> u64 {
    let profile = stream.profile.as_deref().and_then(|p| config.profile(p));
    let (width, height) = profile
        .and_then(|p| Some((p.width?, p.height?)))
        .unwrap_or((1920, 1080));
    let fps = stream.fps().clamp(0.001, 1000.0);
    (f64::from(width) * f64::from(height) * fps).round() as u64
}

/// A stable hash of the id (FNV-1a), the same in every process and run.
fn hashed_owner(id: &str, peers: usize) -> usize {
    let hash = id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    (hash % peers.max(1) as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;

    #[test]
    fn processes_on_one_host_share_its_cores() {
        let on = |hosts: &[&str], process: usize| ClusterArgs {
            workers: 2,
            processes: hosts.len().max(1),
            process,
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            ..ClusterArgs::default()
        };
        let mixed = [
            "127.0.0.1:7000",
            "localhost:7001",
            "10.0.0.2:7000",
            "[::1]:7002",
        ];
        assert_eq!(
            on(&mixed, 0).workers_on_this_host(),
            6,
            "three loopback processes"
        );
        assert_eq!(on(&mixed, 2).workers_on_this_host(), 2, "alone on its host");
        assert_eq!(on(&[], 0).workers_on_this_host(), 2, "one process");
        let default_three = ClusterArgs {
            processes: 3,
            ..on(&[], 1)
        };
        assert_eq!(
            default_three.workers_on_this_host(),
            6,
            "default addresses are all localhost"
        );
        let short_list = ClusterArgs {
            processes: 3,
            ..on(&["a:1"], 0)
        };
        assert_eq!(
            short_list.workers_on_this_host(),
            2,
            "bad addresses: its own workers"
        );
    }

    #[test]
    fn cluster_settings_are_checked_and_default_to_local_ports() {
        assert!(ClusterArgs {
            process: 2,
            processes: 2,
            ..Default::default()
        }
        .timely_config()
        .is_err());
        let config = ClusterArgs {
            processes: 2,
            ..Default::default()
        }
        .timely_config()
        .unwrap();
        match config.communication {
            CommunicationConfig::Cluster { addresses, .. } => {
                assert_eq!(addresses, ["localhost:2101", "localhost:2102"])
            }
            other => panic!("{other:?}"),
        }
        let hosts = ClusterArgs {
            processes: 2,
            hosts: vec!["10.0.0.1:7000".into()],
            ..Default::default()
        };
        let e = hosts.addresses().unwrap_err().to_string();
        assert!(
            e.contains("cluster.hosts lists 1") && e.contains("2 processes"),
            "{e}"
        );
    }

    #[test]
    fn an_own_address_of_another_machine_and_an_unresolvable_peer_are_named() {
        // 192.0.2.0/24 is TEST-NET-1: never an address of this machine.
        let e =
            check_addresses(0, &["192.0.2.7:2101".into(), "localhost:2102".into()]).unwrap_err();
        let text = format!("{e:#}");
        assert!(
            text.contains("cannot listen at its own address 192.0.2.7:2101"),
            "{text}"
        );
        let e = check_addresses(
            1,
            &["no-such-host.invalid:2101".into(), "127.0.0.1:0".into()],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("process 0's address \"no-such-host.invalid:2101\""),
            "{e}"
        );
        let said = unreachable_peers(
            1,
            &["h0:1".into(), "h1:2".into(), "h2:3".into()],
            Duration::from_secs(5),
        );
        assert!(said.contains("connects to process 0 at h0:1"), "{said}");
        assert!(said.contains("waits at h1:2 for process 2"), "{said}");
    }

    fn streams(text: &str) -> Config {
        let mut config = parse(text, "test").unwrap();
        config.apply_profiles();
        config
    }

    #[test]
    fn streams_are_balanced_by_expected_cost_and_placed_alike_everywhere() {
        let mut text = String::from(
            "[profiles.sdf]\num_per_px = 1.5\nfps = 30.0\nwidth = 640\nheight = 480\n\
             [profiles.hd]\num_per_px = 2.2\nfps = 25.0\nwidth = 1920\nheight = 1080\n",
        );
        // Two 1080p streams and eight 640×480 ones: 1080p at 25 fps costs ~6.75 of the small ones.
        for i in 0..2 {
            text += &format!(
                "[[streams]]\nid = \"hd{i}\"\npatient = \"p\"\nsource = \"x\"\nprofile = \"hd\"\n"
            );
        }
        for i in 0..8 {
            text += &format!(
                "[[streams]]\nid = \"s{i}\"\npatient = \"p\"\nsource = \"x\"\nprofile = \"sdf\"\n"
            );
        }
        let config = streams(&text);
        let placement = Placement::new(&config, 2);
        // The two big streams go to different workers, the small ones even out the rest.
        assert_ne!(placement.owner("hd0"), placement.owner("hd1"));
        let load = |w: usize| {
            config
                .streams
                .iter()
                .filter(|s| placement.owner(&s.id) == w)
                .map(|s| expected_cost(&config, s))
                .sum::<u64>()
        };
        let (a, b) = (load(0), load(1));
        assert!(a.abs_diff(b) <= 640 * 480 * 30, "{a} vs {b}");
        // Deterministic: the order of the streams in the config does not matter.
        let mut reversed = config.clone();
        reversed.streams.reverse();
        let again = Placement::new(&reversed, 2);
        for s in &config.streams {
            assert_eq!(placement.owner(&s.id), again.owner(&s.id));
        }
        // A stream added later hashes, and one worker gets every stream.
        assert_eq!(placement.owner("added"), hashed_owner("added", 2));
        assert!(config
            .streams
            .iter()
            .all(|s| Placement::new(&config, 1).owner(&s.id) == 0));
    }
}
