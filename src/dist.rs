//! Several amfmn processes working as one, on PyTorch's own distributed engine (c10d, through
//! the C++ shim `src/shim/dist.cpp`): where the launcher says this process stands ([`Launch`]:
//! torchrun or SLURM), the TCPStore rendezvous and Gloo's process group ([`ProcessGroup`]), and
//! the collectives on tensors, each bounded by the group's timeout.

use std::cell::{Cell, RefCell};
use std::ffi::{c_char, c_void, CString};
use std::time::Duration;

use anyhow::{anyhow, bail, ensure, Context, Result};
use tch::{Device, Tensor};

use crate::device::DeviceClock;
use crate::ffi::{self, ptr, ERROR_CAPACITY};

extern "C" {
    #[allow(clippy::too_many_arguments)]
    fn amfmn_dist_open(
        host: *const c_char,
        port: i32,
        rank: i32,
        world: i32,
        server: i32,
        prefix: *const c_char,
        timeout_ms: i64,
        nccl: i32,
        out: *mut *mut c_void,
        error: *mut c_char,
        capacity: usize,
    ) -> i32;
    fn amfmn_dist_close(group: *mut c_void, abort: i32);
    fn amfmn_dist_has_nccl() -> i32;
    fn amfmn_dist_all_reduce(group: *mut c_void, tensor: *const c_void, error: *mut c_char, capacity: usize) -> i32;
    fn amfmn_dist_all_gather(
        group: *mut c_void,
        output: *const c_void,
        input: *const c_void,
        error: *mut c_char,
        capacity: usize,
    ) -> i32;
    fn amfmn_dist_broadcast(
        group: *mut c_void,
        tensor: *const c_void,
        root: i32,
        error: *mut c_char,
        capacity: usize,
    ) -> i32;
    fn amfmn_dist_barrier(group: *mut c_void, error: *mut c_char, capacity: usize) -> i32;
    fn amfmn_dist_store_set(
        group: *mut c_void,
        key: *const c_char,
        value: *const u8,
        length: usize,
        error: *mut c_char,
        capacity: usize,
    ) -> i32;
    fn amfmn_dist_store_get(
        group: *mut c_void,
        key: *const c_char,
        value: *mut u8,
        length: usize,
        size: *mut usize,
        error: *mut c_char,
        capacity: usize,
    ) -> i32;
    fn amfmn_dist_store_check(
        group: *mut c_void,
        key: *const c_char,
        present: *mut i32,
        error: *mut c_char,
        capacity: usize,
    ) -> i32;
}

/// Where a launcher placed this process: its rank among `world`, its rank on this machine, and
/// the rendezvous address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    pub rank: usize,
    pub world: usize,
    /// The rank on this machine: the GPU this rank takes.
    pub local_rank: usize,
    pub master_addr: String,
    pub master_port: u16,
    /// Whether the launcher serves the store itself (torchrun's agent), so that rank 0 must not.
    pub agent_store: bool,
    /// Keys of this run in the store (a restarted torchrun job gets fresh ones).
    pub prefix: String,
    /// `torchrun` or `SLURM`, for messages.
    pub launcher: &'static str,
}

impl Launch {
    /// The launch this process's environment describes, `None` when it was started alone.
    pub fn from_env() -> Result<Option<Launch>> {
        Launch::from_vars(|name| std::env::var(name).ok())
    }

    /// [`Launch::from_env`] over any variable lookup: torchrun's `RANK`, `WORLD_SIZE`,
    /// `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT`, else SLURM's `SLURM_PROCID`, `SLURM_NTASKS`,
    /// `SLURM_LOCALID` (inside an `srun` step) with `MASTER_ADDR` and `MASTER_PORT` from the user.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Option<Launch>> {
        let number = |name: &str| -> Result<Option<usize>> {
            var(name).map(|v| v.trim().parse().map_err(|_| anyhow!("{name}={v:?} is not a whole number"))).transpose()
        };
        let (rank, world, local_rank, launcher) = if let Some(world) = number("WORLD_SIZE")? {
            let rank = number("RANK")?.context("WORLD_SIZE is set but RANK is not: start amfmn with torchrun")?;
            (rank, world, number("LOCAL_RANK")?.unwrap_or(0), "torchrun")
        } else if let (Some(world), Some(_)) = (number("SLURM_NTASKS")?, var("SLURM_STEP_ID")) {
            let rank = number("SLURM_PROCID")?.context("SLURM_NTASKS is set but SLURM_PROCID is not")?;
            (rank, world, number("SLURM_LOCALID")?.unwrap_or(0), "SLURM")
        } else {
            return Ok(None);
        };
        if world == 0 || rank >= world {
            bail!("{launcher}: rank {rank} is not below the world size {world}");
        }
        if world == 1 {
            return Ok(None);
        }
        let master_addr = var("MASTER_ADDR").filter(|a| !a.trim().is_empty()).with_context(|| {
            format!("{launcher} started {world} processes but MASTER_ADDR is not set: export MASTER_ADDR (rank 0's host) and MASTER_PORT")
        })?;
        let port =
            var("MASTER_PORT").with_context(|| format!("{launcher}: MASTER_PORT is not set: export a free port"))?;
        let master_port = port.trim().parse().map_err(|_| anyhow!("MASTER_PORT={port:?} is not a port number"))?;
        let agent_store = var("TORCHELASTIC_USE_AGENT_STORE").is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let prefix = format!("amfmn/{}/", var("TORCHELASTIC_RESTART_COUNT").unwrap_or_else(|| "0".into()));
        Ok(Some(Launch { rank, world, local_rank, master_addr, master_port, agent_store, prefix, launcher }))
    }
}

/// How long a rank whose collective failed waits for the other survivors to say so, before it
/// names the ranks that did not as lost.
const SURVIVORS_GRACE: Duration = Duration::from_secs(2);

/// This process's membership of a group of processes over a TCPStore: Gloo's process group, or
/// NCCL's for processes on GPUs. Collectives take dense, contiguous tensors on
/// [`ProcessGroup::device`]. Gloo's block until done or until the timeout; NCCL's are queued on
/// the GPU like any other work (the host goes on queueing the step), bounded by NCCL's watchdog
/// and by the host's bounded waits for the device ([`ProcessGroup::stalled`]).
#[derive(Debug)]
pub struct ProcessGroup {
    group: *mut c_void,
    pub rank: usize,
    pub world: usize,
    pub timeout: Duration,
    /// Where the collectives' tensors live: this rank's GPU (NCCL) or the CPU (Gloo).
    pub device: Device,
    /// The time of the collectives so far: the device's (NCCL) or the host's (Gloo).
    clock: RefCell<DeviceClock>,
    /// Whether this process finished every collective it queued ([`ProcessGroup::finished`]).
    finished: Cell<bool>,
}

impl ProcessGroup {
    /// Joins the launch's group for a model on `device`, waiting up to `timeout` for every rank;
    /// the same timeout bounds each collective afterwards. On a GPU the group is NCCL's when
    /// this build has it (else Gloo's, through copies on the CPU).
    pub fn join(launch: &Launch, timeout: Duration, device: Device) -> Result<ProcessGroup> {
        let device = if device.is_cuda() && ProcessGroup::has_nccl() { device } else { Device::Cpu };
        let host = CString::new(launch.master_addr.as_str()).context("MASTER_ADDR holds a NUL byte")?;
        let prefix = CString::new(launch.prefix.as_str()).expect("the prefix is ASCII");
        let server = i32::from(launch.rank == 0 && !launch.agent_store);
        let mut group = std::ptr::null_mut();
        let status = call(|error| unsafe {
            amfmn_dist_open(
                host.as_ptr(),
                i32::from(launch.master_port),
                launch.rank as i32,
                launch.world as i32,
                server,
                prefix.as_ptr(),
                timeout.as_millis() as i64,
                i32::from(device.is_cuda()),
                &mut group,
                error,
                ERROR_CAPACITY,
            )
        });
        status.with_context(|| {
            format!(
                "rank {} of {} could not join the group at {}:{} within {} s (are all {} processes started, with \
                 this MASTER_ADDR and MASTER_PORT, and is rank 0's host reachable?)",
                launch.rank,
                launch.world,
                launch.master_addr,
                launch.master_port,
                timeout.as_secs(),
                launch.world
            )
        })?;
        Ok(ProcessGroup {
            group,
            rank: launch.rank,
            world: launch.world,
            timeout,
            device,
            clock: RefCell::new(DeviceClock::new(device)),
            finished: Cell::new(false),
        })
    }

    /// Whether this process writes a run's files and reports for all: rank 0 of a group, or a
    /// process on its own (`None`).
    pub fn leads(group: Option<&ProcessGroup>) -> bool {
        group.is_none_or(|g| g.rank == 0)
    }

    /// The process group's backend, for messages: `NCCL` or `Gloo`.
    pub fn backend(&self) -> &'static str {
        if self.device.is_cuda() {
            "NCCL"
        } else {
            "Gloo"
        }
    }

    /// Whether this build has NCCL's process group (the shim was compiled against the CUDA and
    /// NCCL headers).
    pub fn has_nccl() -> bool {
        // SAFETY: no arguments, no state.
        unsafe { amfmn_dist_has_nccl() != 0 }
    }

    /// Sums `tensor` over all ranks, in place.
    pub fn all_reduce_sum(&self, tensor: &Tensor) -> Result<()> {
        let tensor = contiguous(tensor)?;
        self.timed("all-reduce", || {
            call(|e| unsafe { amfmn_dist_all_reduce(self.group, ptr(tensor), e, ERROR_CAPACITY) })
        })
    }

    /// Every rank's `tensor` (`[n, ...]`, the same shape on all) stacked in rank order:
    /// `[world * n, ...]`.
    pub fn all_gather(&self, tensor: &Tensor) -> Result<Tensor> {
        let input = tensor.contiguous();
        let mut size = input.size();
        size[0] *= self.world as i64;
        let output = Tensor::empty(size.as_slice(), (input.kind(), input.device()));
        self.timed("all-gather", || {
            call(|e| unsafe { amfmn_dist_all_gather(self.group, ptr(&output), ptr(&input), e, ERROR_CAPACITY) })
        })?;
        Ok(output)
    }

    /// Every rank's rows in rank order, `[Σ sizes, ...]` on [`ProcessGroup::device`], where
    /// rank k holds `sizes[k]` rows (`rows` is this rank's, on any device): each rank pads its
    /// rows to the largest share for one all-gather.
    pub fn all_gather_rows(&self, rows: &Tensor, sizes: &[usize]) -> Result<Tensor> {
        ensure!(
            sizes.len() == self.world && rows.size().first() == Some(&(sizes[self.rank] as i64)),
            "rank {} gathers {:?} rows where its share is {sizes:?}",
            self.rank,
            rows.size()
        );
        let largest = sizes.iter().copied().max().unwrap_or(0) as i64;
        let rows = rows.to_device(self.device);
        let mut padding = rows.size();
        padding[0] = largest - padding[0];
        let padded = if padding[0] > 0 {
            Tensor::cat(&[rows.shallow_clone(), Tensor::zeros(padding.as_slice(), (rows.kind(), self.device))], 0)
        } else {
            rows
        };
        let blocks = self.all_gather(&padded)?;
        let parts: Vec<Tensor> =
            sizes.iter().enumerate().map(|(k, &size)| blocks.narrow(0, k as i64 * largest, size as i64)).collect();
        Ok(Tensor::cat(&parts, 0))
    }

    /// Rank `root`'s `tensor` into every rank's, in place.
    pub fn broadcast(&self, tensor: &Tensor, root: usize) -> Result<()> {
        let tensor = contiguous(tensor)?;
        self.timed("broadcast", || {
            call(|e| unsafe { amfmn_dist_broadcast(self.group, ptr(tensor), root as i32, e, ERROR_CAPACITY) })
        })
    }

    /// Returns when every rank has reached it.
    pub fn barrier(&self) -> Result<()> {
        self.timed("barrier", || call(|e| unsafe { amfmn_dist_barrier(self.group, e, ERROR_CAPACITY) }))
    }

    /// Writes `value` under `key` in the group's store.
    pub fn set(&self, key: &str, value: &[u8]) -> Result<()> {
        let key = CString::new(key).context("a store key holds a NUL byte")?;
        let status = call(|e| unsafe {
            amfmn_dist_store_set(self.group, key.as_ptr(), value.as_ptr(), value.len(), e, ERROR_CAPACITY)
        });
        self.check("store write", status)
    }

    /// The value under `key`, waiting up to the timeout for a rank to write it.
    pub fn get(&self, key: &str) -> Result<Vec<u8>> {
        let name = CString::new(key).context("a store key holds a NUL byte")?;
        let mut value = vec![0u8; 4096];
        loop {
            let mut size = 0;
            let status = call(|e| unsafe {
                amfmn_dist_store_get(
                    self.group,
                    name.as_ptr(),
                    value.as_mut_ptr(),
                    value.len(),
                    &mut size,
                    e,
                    ERROR_CAPACITY,
                )
            });
            self.check(&format!("store read of {key}"), status)?;
            if size <= value.len() {
                value.truncate(size);
                return Ok(value);
            }
            value.resize(size, 0);
        }
    }

    /// The time spent in collectives since the group was joined, waiting for slower ranks
    /// included: on NCCL, the GPU's (from reaching each collective to passing it; the host only
    /// queues them), read once the GPU has run them (waits for it); on Gloo, the host's.
    pub fn time_in_collectives(&self) -> Result<Duration> {
        Ok(Duration::from_secs_f64(self.clock.borrow_mut().seconds()?))
    }

    /// Says that this process has finished its part of the run (every rank agreed on its end):
    /// the group is then shut down when dropped, as `destroy_process_group` does, instead of
    /// aborted (which cancels NCCL's collectives left waiting on a lost rank).
    pub fn finished(&self) {
        self.finished.set(true);
    }

    /// Whether `key` is in the store now (no waiting).
    pub fn has(&self, key: &str) -> Result<bool> {
        let name = CString::new(key).context("a store key holds a NUL byte")?;
        let mut present = 0;
        let status =
            call(|e| unsafe { amfmn_dist_store_check(self.group, name.as_ptr(), &mut present, e, ERROR_CAPACITY) });
        self.check(&format!("store check of {key}"), status)?;
        Ok(present != 0)
    }

    /// Every rank's outcome of the start-up check `step`: this rank's own error, else the error
    /// of the first other rank that failed it (named), else this rank's value. A rank that does
    /// not report within the timeout is named too.
    pub fn agree<T>(&self, step: &str, outcome: Result<T>) -> Result<T> {
        let verdict = outcome.as_ref().err().map(|e| format!("{e:#}")).unwrap_or_default();
        self.set(&format!("agree/{step}/{}", self.rank), verdict.as_bytes())?;
        let mut failed = None;
        for peer in (0..self.world).filter(|&peer| peer != self.rank) {
            let said = self.get(&format!("agree/{step}/{peer}")).with_context(|| {
                format!(
                    "rank {peer} of {} did not finish its {step} check within {} s",
                    self.world,
                    self.timeout.as_secs()
                )
            })?;
            if !said.is_empty() && failed.is_none() {
                failed = Some((peer, String::from_utf8_lossy(&said).into_owned()));
            }
        }
        self.set(&format!("agree/{step}/{}/read", self.rank), b"")?;
        if outcome.is_err() {
            self.linger(step);
        }
        let value = outcome?;
        match failed {
            Some((peer, why)) => bail!("rank {peer} of {} could not start: {why}", self.world),
            None => Ok(value),
        }
    }

    /// Waits (at most the timeout per rank) until every other rank has read the verdicts of
    /// `step`: a launcher stops every rank once one exits, so the others must have learnt why
    /// before this failed rank exits (each says it right after reading).
    fn linger(&self, step: &str) {
        for peer in (0..self.world).filter(|&peer| peer != self.rank) {
            let _ = self.get(&format!("agree/{step}/{peer}/read"));
        }
    }

    /// The ranks' votes on `flag` (one all-reduce of one number, queued: on a GPU the host does
    /// not wait for it): the returned `[1]` tensor holds how many ranks set it, to be read once
    /// the host may wait for the device anyway.
    pub fn vote(&self, flag: bool) -> Result<Tensor> {
        let votes = Tensor::from_slice(&[f32::from(u8::from(flag))]).to_device(self.device);
        self.all_reduce_sum(&votes)?;
        Ok(votes)
    }

    /// The error of a rank whose device has not finished `what` (queued work, collectives
    /// included) within the timeout: it names the ranks that caused it, as a failed collective's.
    pub fn stalled(&self, what: &str) -> anyhow::Error {
        anyhow!(
            "rank {} of {}: {what} did not finish within {} s, {}",
            self.rank,
            self.world,
            self.timeout.as_secs(),
            self.culprits()
        )
    }

    /// Tells the other ranks, through the store, why this rank stops (its error), so that the
    /// collective they are waiting in fails with that reason rather than "connection closed".
    pub fn announce_stop(&self, why: &str) {
        let key = stop_key(self.rank);
        if !self.has(&key).unwrap_or(true) {
            let _ = self.set(&key, why.as_bytes());
        }
    }

    /// A collective, its time added to [`ProcessGroup::time_in_collectives`]; its failure
    /// names the ranks that caused it.
    fn timed(&self, what: &str, collective: impl FnOnce() -> Result<()>) -> Result<()> {
        let status = self.clock.borrow_mut().time(collective).and_then(|status| status);
        status.map_err(|error| {
            let culprits = self.culprits();
            error.context(format!("rank {} of {}: {what} failed, {culprits}", self.rank, self.world))
        })
    }

    /// Who made a collective fail: each survivor marks itself in the store, waits
    /// [`SURVIVORS_GRACE`] for the others, and reads who stopped with an error
    /// ([`ProcessGroup::announce_stop`]) and who said nothing (lost: exited, killed, hung).
    fn culprits(&self) -> String {
        const STORE_LOST: &str = "and the store cannot be reached either: rank 0, which serves it, is lost";
        if self.set(&stop_key(self.rank), b"").is_err() {
            return STORE_LOST.to_owned();
        }
        std::thread::sleep(SURVIVORS_GRACE);
        let mut lost = Vec::new();
        for peer in (0..self.world).filter(|&peer| peer != self.rank) {
            let key = stop_key(peer);
            match self.has(&key).and_then(|present| if present { self.get(&key).map(Some) } else { Ok(None) }) {
                Ok(Some(why)) if !why.is_empty() => {
                    return format!("rank {peer} stopped with an error: {}", String::from_utf8_lossy(&why));
                }
                Ok(Some(_)) => {}
                Ok(None) => lost.push(peer.to_string()),
                Err(_) => return STORE_LOST.to_owned(),
            }
        }
        match lost.as_slice() {
            [] => "though every rank is still there".to_owned(),
            [one] => format!("rank {one} is lost (it exited, was killed or stopped answering)"),
            many => format!("ranks {} are lost (they exited, were killed or stopped answering)", many.join(", ")),
        }
    }

    fn check(&self, what: &str, status: Result<()>) -> Result<()> {
        status.with_context(|| format!("rank {} of {}: {what} failed", self.rank, self.world))
    }
}

impl Drop for ProcessGroup {
    /// Leaves the group: shut down after [`ProcessGroup::finished`], aborted otherwise.
    fn drop(&mut self) {
        let abort = i32::from(!self.finished.get());
        // SAFETY: `group` came from amfmn_dist_open and is closed once.
        unsafe { amfmn_dist_close(self.group, abort) };
    }
}

/// The store key under which rank `rank` says why it stopped (empty: it saw a collective fail).
fn stop_key(rank: usize) -> String {
    format!("stopped/{rank}")
}

/// The tensor itself when it is dense and contiguous (collectives write into it in place).
fn contiguous(tensor: &Tensor) -> Result<&Tensor> {
    if !tensor.is_contiguous() {
        bail!("a collective's tensor must be contiguous");
    }
    Ok(tensor)
}

/// Runs a shim function with an error buffer ([`ffi::call`]): its message when it fails.
fn call(f: impl FnOnce(*mut c_char) -> i32) -> Result<()> {
    ffi::call(f).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn launch(vars: &[(&str, &str)]) -> Result<Option<Launch>> {
        let vars: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Launch::from_vars(|name| vars.get(name).cloned())
    }

    #[test]
    fn torchrun_and_srun_environments_are_read_and_checked() {
        assert_eq!(launch(&[]).unwrap(), None, "started alone");
        let torchrun = [
            ("RANK", "3"),
            ("WORLD_SIZE", "4"),
            ("LOCAL_RANK", "1"),
            ("MASTER_ADDR", "node0"),
            ("MASTER_PORT", "29500"),
            ("TORCHELASTIC_USE_AGENT_STORE", "True"),
            ("TORCHELASTIC_RESTART_COUNT", "2"),
        ];
        let got = launch(&torchrun).unwrap().unwrap();
        assert_eq!((got.rank, got.world, got.local_rank, got.master_port), (3, 4, 1, 29500));
        assert!(got.agent_store && got.launcher == "torchrun" && got.prefix == "amfmn/2/");
        let srun = [
            ("SLURM_PROCID", "5"),
            ("SLURM_NTASKS", "8"),
            ("SLURM_LOCALID", "1"),
            ("SLURM_STEP_ID", "0"),
            ("MASTER_ADDR", "gpu17"),
            ("MASTER_PORT", "12345"),
        ];
        let got = launch(&srun).unwrap().unwrap();
        assert_eq!((got.rank, got.world, got.local_rank, got.agent_store), (5, 8, 1, false));
        assert_eq!(launch(&srun[..2]).unwrap(), None, "a batch script outside srun is one process");
        assert_eq!(launch(&[("RANK", "0"), ("WORLD_SIZE", "1")]).unwrap(), None, "a world of one");
    }

    #[test]
    fn a_broken_launch_is_one_clear_error() {
        let message = |vars: &[(&str, &str)]| format!("{:#}", launch(vars).unwrap_err());
        assert!(message(&[("RANK", "2"), ("WORLD_SIZE", "2")]).contains("rank 2 is not below the world size 2"));
        assert!(message(&[("WORLD_SIZE", "2")]).contains("RANK is not"));
        assert!(message(&[("RANK", "0"), ("WORLD_SIZE", "two")]).contains("WORLD_SIZE=\"two\""));
        assert!(message(&[("RANK", "0"), ("WORLD_SIZE", "2")]).contains("MASTER_ADDR is not set"));
        let no_port = [("RANK", "0"), ("WORLD_SIZE", "2"), ("MASTER_ADDR", "h"), ("MASTER_PORT", "99999")];
        assert!(message(&no_port).contains("not a port number"));
    }
}
