//! Load on `amfmn serve` over loopback: the service (the release binary, a fresh full-size model
//! of the RSITMD option file) holds N ready images with synthetic codes, put in its database
//! through the library; C clients send text searches.
//! - Phase 1: C clients, at most 250 searches each, stopped after 60 s: requests/s, latency
//!   percentiles, errors, the server's peak RSS.
//! - Phase 2: the service restarted with `--queue 4`, 32 clients for 10 s: how many requests
//!   were refused (503) and how fast, the p99 of those accepted, and one search after the burst.
//!
//! `cargo bench --bench serve -- [N] [C]`; prints `key=value` lines.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use amfmn::options::Options;
use amfmn::serve::images::{self, NewImage};
use amfmn::serve::{auth, store};
use anyhow::Result;
use tch::{Device, Kind, Tensor};

#[path = "../tests/common/mod.rs"]
mod common;

use common::SENTENCES;

/// A fresh full-size model's checkpoint (the RSITMD option file) in `dir/ckpt`.
fn checkpoint(dir: &Path) -> Result<PathBuf> {
    let options = Options::parse(&std::fs::read_to_string("option/RSITMD_AMFMN.yaml")?, &[])?;
    Ok(common::untrained_checkpoint(dir, options, &common::sentence_vocabulary(), 0))
}

/// A data folder with one user (whose token is returned) owning `n` ready images with synthetic
/// soft-attention codes.
fn data_folder(data: &Path, n: i64) -> Result<String> {
    std::fs::create_dir_all(data)?;
    let mut db = store::open(&data.join(store::DATABASE), true)?;
    let token = auth::add_token(&mut db, "bench", None, "bench")?;
    let owner: i64 = db.query_row("SELECT id FROM users WHERE name = 'bench'", [], |r| r.get(0))?;
    tch::manual_seed(1);
    let fv = Vec::<f32>::try_from(Tensor::randn([n, 512], (Kind::Float, Device::Cpu)).view([-1]))?;
    let gate = Vec::<f32>::try_from(Tensor::randn([n, 512], (Kind::Float, Device::Cpu)).sigmoid().view([-1]))?;
    let tx = db.transaction()?;
    for k in 0..n as usize {
        let sha = amfmn::fsutil::sha256_hex(&k.to_le_bytes());
        let image = NewImage {
            sha256: sha,
            owner,
            public: k % 2 == 0,
            name: format!("synthetic {k}"),
            format: "png",
            width: 256,
            height: 256,
            bytes: 1,
        };
        let (id, _) = images::insert(&tx, &image)?;
        let rows = k * 512..(k + 1) * 512;
        images::mark_ready(&tx, id, &fv[rows.clone()], Some(&gate[rows]), "synthetic")?;
    }
    tx.commit()?;
    Ok(token)
}

/// The service running as a child process.
struct Server {
    child: Child,
    base: String,
}

impl Server {
    fn start(data: &Path, ckpt: &Path, queue: usize) -> Result<Server> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_amfmn"))
            .args(["serve", "--data", &data.display().to_string(), "--checkpoint", &ckpt.display().to_string()])
            .args(["--listen", "127.0.0.1:0", "--device", "cpu", "--queue", &queue.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line)?;
        let address = line.trim().strip_prefix("listening on ").ok_or_else(|| anyhow::anyhow!("{line:?}"))?;
        Ok(Server { child, base: format!("http://{address}") })
    }

    /// The peak resident memory so far, in MB (Linux's VmHWM).
    fn peak_rss_mb(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        let kb = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok());
        kb.map_or(f64::NAN, |kb: f64| kb / 1024.0)
    }

    fn stop(mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

/// One search: its status (0 when the connection failed) and latency in ms.
fn search(agent: &ureq::Agent, base: &str, token: &str, k: usize) -> (u16, f64) {
    let body = serde_json::json!({ "query": SENTENCES[k % SENTENCES.len()], "limit": 10 }).to_string();
    let start = Instant::now();
    let request = agent.post(format!("{base}/api/v1/search/text")).header("authorization", &format!("Bearer {token}"));
    let status = match request.header("content-type", "application/json").send(body.as_bytes()) {
        Ok(mut response) => {
            let _ = response.body_mut().read_to_vec();
            response.status().as_u16()
        }
        Err(_) => 0,
    };
    (status, start.elapsed().as_secs_f64() * 1000.0)
}

/// `clients` threads searching until each has sent `each` or `limit` has passed: every
/// (status, ms), and the seconds it took.
fn load(base: &str, token: &str, clients: usize, each: usize, limit: Duration) -> (Vec<(u16, f64)>, f64) {
    let results = Arc::new(Mutex::new(Vec::new()));
    let start = Instant::now();
    std::thread::scope(|scope| {
        for c in 0..clients {
            let results = results.clone();
            scope.spawn(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .timeout_global(Some(Duration::from_secs(30)))
                    .build()
                    .into();
                for k in 0..each {
                    if start.elapsed() > limit {
                        break;
                    }
                    let outcome = search(&agent, base, token, c + k);
                    results.lock().unwrap().push(outcome);
                }
            });
        }
    });
    let seconds = start.elapsed().as_secs_f64();
    let results = Arc::try_unwrap(results).expect("joined").into_inner().unwrap();
    (results, seconds)
}

fn percentile(values: &mut [f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    values[((values.len() - 1) as f64 * p).round() as usize]
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let n: i64 = args.first().map_or(Ok(10_000), |s| s.parse())?;
    let clients: usize = args.get(1).map_or(Ok(8), |s| s.parse())?;
    let dir = tempfile::tempdir()?;
    let ckpt = checkpoint(dir.path())?;
    let data = dir.path().join("data");
    let token = data_folder(&data, n)?;

    let server = Server::start(&data, &ckpt, 256)?;
    let _ = load(&server.base, &token, 1, 5, Duration::from_secs(30));
    let (results, seconds) = load(&server.base, &token, clients, 250, Duration::from_secs(60));
    let mut ok: Vec<f64> = results.iter().filter(|r| r.0 == 200).map(|r| r.1).collect();
    println!("images={n}\nclients={clients}\nrequests={}", results.len());
    println!("requests_per_s={:.1}", results.len() as f64 / seconds);
    println!("p50_ms={:.1}", percentile(&mut ok, 0.50));
    println!("p95_ms={:.1}", percentile(&mut ok, 0.95));
    println!("p99_ms={:.1}", percentile(&mut ok, 0.99));
    println!("errors={}", results.iter().filter(|r| r.0 != 200).count());
    println!("peak_rss_mb={:.0}", server.peak_rss_mb());
    server.stop();

    let server = Server::start(&data, &ckpt, 4)?;
    let (burst, seconds) = load(&server.base, &token, 32, usize::MAX, Duration::from_secs(10));
    let mut refused: Vec<f64> = burst.iter().filter(|r| r.0 == 503).map(|r| r.1).collect();
    let mut accepted: Vec<f64> = burst.iter().filter(|r| r.0 == 200).map(|r| r.1).collect();
    println!("burst_requests={}\nburst_seconds={seconds:.1}", burst.len());
    println!("burst_accepted={}\nburst_refused_503={}", accepted.len(), refused.len());
    println!("burst_other={}", burst.iter().filter(|r| r.0 != 200 && r.0 != 503).count());
    println!("burst_503_p50_ms={:.2}", percentile(&mut refused, 0.50));
    println!("burst_503_p99_ms={:.2}", percentile(&mut refused, 0.99));
    println!("burst_accepted_p99_ms={:.1}", percentile(&mut accepted, 0.99));
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    println!("after_burst_status={}", search(&agent, &server.base, &token, 0).0);
    println!("burst_peak_rss_mb={:.0}", server.peak_rss_mb());
    server.stop();
    Ok(())
}
