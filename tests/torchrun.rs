//! `amfmn train` started by torchrun (from the project's PyTorch environment) as two processes
//! with Gloo on 127.0.0.1: they train exactly like two replicas in one process
//! (`--device cpu,cpu`), share its validation to the same metrics, and write one set of files; stopped by SIGTERM and resumed they end
//! where an uninterrupted run ends; Ctrl-C on one rank stops both; a killed rank stops the other
//! with one line naming it; a rank started with other options is refused before anything is
//! written.

mod common;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use amfmn::checkpoint::read_safetensors;
use common::{amfmn_in, tiny_training_set};

/// Each test runs two processes on this machine's cores: one test at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// What every run here sets: one thread per process, random initial weights, no dropout (each
/// process draws its own masks, one process draws them from one stream), and validation
/// batches of 3, so that two processes share the 4 validation images and 20 captions.
const SETS: [&str; 8] = [
    "--set",
    "threads=1",
    "--set",
    "model.resnet_weights=none",
    "--set",
    "model.seq2vec.dropout=0",
    "--set",
    "dataset.batch_size_val=3",
];

/// `torchrun --standalone --nproc-per-node 2 --no-python [wrapper] amfmn train ... --device cpu`
/// in `dir`, for experiment `name`.
fn torchrun(dir: &Path, name: &str, extra: &[&str], wrapper: Option<&str>) -> Command {
    let mut command = Command::new(common::python());
    command
        .current_dir(dir)
        .args(["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "--no-python"])
        .args(wrapper)
        .arg(env!("CARGO_BIN_EXE_amfmn"))
        .args(["train", "--path_opt", "opt.yaml", "--device", "cpu"])
        .args(SETS)
        .args(["--set", &format!("k_fold.experiment_name={name}")])
        .args(extra)
        .env("GLOO_SOCKET_IFNAME", "lo")
        .env("OMP_NUM_THREADS", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

/// Starts `command` and returns once the fold's split is written (training is about to start).
fn start_training(dir: &Path, name: &str, mut command: Command) -> Child {
    let child = command.spawn().expect("torchrun starts");
    let split = dir.join("checkpoint").join(name).join("0/split.json");
    let start = Instant::now();
    while !split.exists() {
        assert!(start.elapsed() < Duration::from_secs(120), "no training started");
        std::thread::sleep(Duration::from_millis(100));
    }
    child
}

/// Waits for the machine's cores ([`ONE_AT_A_TIME`]), then writes the tiny training set into a
/// fresh folder.
fn one_at_a_time_with_a_training_set() -> (MutexGuard<'static, ()>, tempfile::TempDir) {
    let one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    tiny_training_set(dir.path());
    (one, dir)
}

/// `amfmn train ... --device cpu` in `dir` with `args` and launcher variables `vars`, as
/// a launcher would start one process (Gloo on the loopback interface).
fn train_as_launched(dir: &Path, args: &[&str], vars: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_amfmn"));
    command
        .current_dir(dir)
        .args(["train", "--path_opt", "opt.yaml", "--device", "cpu"])
        .args(args)
        .envs(vars.iter().copied())
        .env("GLOO_SOCKET_IFNAME", "lo")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// The largest difference between two safetensors files with the same tensors.
fn max_difference(a: &Path, b: &Path) -> f64 {
    let (a, b) = (read_safetensors(a).unwrap(), read_safetensors(b).unwrap());
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    let diff = |k: &String| (a[k].to_kind(tch::Kind::Double) - b[k].to_kind(tch::Kind::Double)).abs().max();
    a.keys().map(|k| diff(k).double_value(&[])).fold(0.0, f64::max)
}

#[test]
fn two_ranks_train_like_two_replicas_and_resume_after_sigterm_exactly() {
    let (_one, dir) = one_at_a_time_with_a_training_set();
    let dir = dir.path();
    let mut one = vec!["train", "--path_opt", "opt.yaml", "--device", "cpu,cpu"];
    one.extend(SETS);
    one.extend(["--set", "k_fold.experiment_name=one"]);
    let out = amfmn_in(dir, &one);
    assert!(out.status.success(), "{}", text(&out));
    let out = torchrun(dir, "ranks", &[], None).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let said = text(&out);
    assert!(said.contains("training AMFMN on 2 processes over Gloo (cpu (1 threads) each, this rank 0)"), "{said}");
    assert_eq!(said.matches("best validation results").count(), 1, "rank 0 alone reports: {said}");
    let c = dir.join("checkpoint");
    for file in ["last.safetensors", "last.optimizer.safetensors", "best.safetensors"] {
        let diff = max_difference(&c.join("one/0").join(file), &c.join("ranks/0").join(file));
        println!("{file}: two processes against two replicas in one process: max difference {diff:.1e}");
        assert!(diff <= 1e-5, "{file} differs by {diff}");
    }
    let json = |path: std::path::PathBuf| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    };
    for file in ["last.json", "best.json"] {
        let (one, ranks) = (json(c.join("one/0").join(file)), json(c.join("ranks/0").join(file)));
        println!("{file}: validation metrics of one process {} / two sharing it {}", one["metrics"], ranks["metrics"]);
        assert!(one["metrics"].is_object(), "{one}");
        assert_eq!(one["metrics"], ranks["metrics"], "{file}: two processes sharing the validation");
    }
    let events = std::fs::read_dir(dir.join("logs/demo/ranks/0")).unwrap().count();
    assert_eq!(events, 1, "one TensorBoard events file, rank 0's");

    let stopped = start_training(dir, "stopped", torchrun(dir, "stopped", &[], None));
    std::thread::sleep(Duration::from_secs(3));
    let status = Command::new("kill").args(["-TERM", &stopped.id().to_string()]).status().unwrap();
    assert!(status.success());
    let out = stopped.wait_with_output().unwrap();
    let said = text(&out);
    assert_eq!(said.matches("stopped by Ctrl-C or SIGTERM").count(), 1, "rank 0 alone says how to resume: {said}");
    assert!(said.contains("stopped by Ctrl-C or SIGTERM; resume with: "), "{said}");
    let last = json(c.join("stopped/0/last.json"));
    println!("stopped by SIGTERM at epoch {}, batch {}", last["epoch"], last["batch"]);
    let resume = ["--resume", "checkpoint/stopped/0"];
    let out = torchrun(dir, "stopped", &resume, None).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("fold 0: resuming checkpoint/stopped/0 at epoch"), "{}", text(&out));
    for file in ["last.safetensors", "last.optimizer.safetensors"] {
        let diff = max_difference(&c.join("ranks/0").join(file), &c.join("stopped/0").join(file));
        assert!(diff == 0.0, "{file}: resumed after SIGTERM differs by {diff} from the uninterrupted run");
    }
}

#[test]
fn a_killed_rank_stops_the_other_with_one_line_naming_it() {
    let (_one, dir) = one_at_a_time_with_a_training_set();
    let dir = dir.path();
    let timeout = 20;
    let extra = ["--set", "optim.epochs=5", "--timeout", "20"];
    let child = start_training(dir, "killed", torchrun(dir, "killed", &extra, None));
    std::thread::sleep(Duration::from_secs(3));
    let rank_1 = process_of_rank(dir, 1).expect("rank 1 runs");
    Command::new("kill").args(["-KILL", &rank_1.to_string()]).status().unwrap();
    let killed = Instant::now();
    let out = child.wait_with_output().unwrap();
    let elapsed = killed.elapsed();
    let said = text(&out);
    let line = said.lines().find(|l| l.starts_with("error: rank 0 of 2:")).unwrap_or_else(|| panic!("{said}"));
    println!("{:.1} s after rank 1 was killed: {line}", elapsed.as_secs_f64());
    assert!(line.contains("rank 1 is lost"), "{line}");
    assert!(elapsed <= Duration::from_secs(timeout), "took {elapsed:?}");
}

/// Ctrl-C reaching one rank alone (SIGINT to rank 1's process; two processes started with
/// torchrun's variables, no agent to pass signals on): the ranks' vote stops both after the same
/// step, so rank 0, which got no signal, writes `last` and says how to resume, and no rank is
/// reported lost; resumed, the run finishes.
#[test]
fn ctrl_c_on_one_rank_stops_both_after_the_same_step() {
    let (_one, dir) = one_at_a_time_with_a_training_set();
    let dir = dir.path();
    let port = common::rendezvous_port().to_string();
    let launch = |extra: &[&str]| -> Vec<Child> {
        let args: Vec<&str> = ["--set", "optim.epochs=5", "--set", "k_fold.experiment_name=one"]
            .iter()
            .chain(&SETS)
            .chain(extra)
            .copied()
            .collect();
        (0..2)
            .map(|rank| {
                let rank = rank.to_string();
                let vars = [
                    ("RANK", rank.as_str()),
                    ("LOCAL_RANK", &rank),
                    ("WORLD_SIZE", "2"),
                    ("MASTER_ADDR", "127.0.0.1"),
                    ("MASTER_PORT", &port),
                ];
                train_as_launched(dir, &args, &vars).spawn().unwrap()
            })
            .collect()
    };
    let ranks = launch(&[]);
    let split = dir.join("checkpoint/one/0/split.json");
    let start = Instant::now();
    while !split.exists() {
        assert!(start.elapsed() < Duration::from_secs(120), "no training started");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(3));
    Command::new("kill").args(["-INT", &ranks[1].id().to_string()]).status().unwrap();
    let said: Vec<String> = ranks.into_iter().map(|rank| text(&rank.wait_with_output().unwrap())).collect();
    assert!(said[0].contains("stopped by Ctrl-C or SIGTERM; resume with: "), "rank 0 stopped too: {}", said[0]);
    assert!(!said[0].contains("interrupted"), "rank 0 got no signal: {}", said[0]);
    assert!(said.iter().all(|s| !s.contains("error")), "{said:?}");
    let last: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("checkpoint/one/0/last.json")).unwrap()).unwrap();
    println!("rank 1 interrupted: both stopped at epoch {}, batch {}", last["epoch"], last["batch"]);
    assert!(last["epoch"].as_u64().unwrap() < 5, "{last}");
    for (rank, resumed) in launch(&["--resume", "checkpoint/one/0"]).into_iter().enumerate() {
        let out = resumed.wait_with_output().unwrap();
        assert!(out.status.success(), "rank {rank}: {}", text(&out));
    }
}

/// The amfmn process of rank `rank` working in `dir`.
fn process_of_rank(dir: &Path, rank: usize) -> Option<u32> {
    let wanted = format!("RANK={rank}");
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|entry| {
        let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
        let exe = std::fs::read_link(entry.path().join("exe")).ok()?;
        let cwd = std::fs::read_link(entry.path().join("cwd")).ok()?;
        let environ = std::fs::read(entry.path().join("environ")).ok()?;
        let ours = exe.file_name()? == "amfmn" && cwd == dir;
        (ours && environ.split(|&b| b == 0).any(|v| v == wanted.as_bytes())).then_some(pid)
    })
}

#[test]
fn a_rank_with_other_options_is_refused_before_anything_is_written() {
    let (_one, dir) = one_at_a_time_with_a_training_set();
    let dir = dir.path();
    let wrapper = dir.join("other_lr_on_rank_1.sh");
    std::fs::write(
        &wrapper,
        "#!/bin/sh\nif [ \"$RANK\" = 1 ]; then exec \"$@\" --set optim.lr=0.001; fi\nexec \"$@\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = torchrun(dir, "mixed", &[], Some("./other_lr_on_rank_1.sh")).output().unwrap();
    assert!(!out.status.success());
    let said = text(&out);
    let why = "rank 1's options differ from rank 0's (optim.lr: 0.0002 → 0.001): start every process with the same \
               option file and --set values";
    assert!(said.contains(&format!("error: {why}")), "{said}");
    assert!(said.contains(&format!("error: rank 1 of 2 could not start: {why}")), "rank 0 says why: {said}");
    assert!(!dir.join("checkpoint/mixed").exists() && !dir.join("logs/demo/mixed").exists(), "nothing written");
}

/// A wrong WORLD_SIZE (rank 0 waits for a rank nobody started) and an unreachable master (rank 1
/// alone) are one line each within the timeout, with nothing written.
#[test]
fn a_missing_rank_or_an_unreachable_master_is_one_line_within_the_timeout() {
    let (_one, dir) = one_at_a_time_with_a_training_set();
    let dir = dir.path();
    for rank in ["0", "1"] {
        let port = common::rendezvous_port().to_string();
        let start = Instant::now();
        let vars = [("RANK", rank), ("WORLD_SIZE", "2"), ("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", &port)];
        let out = train_as_launched(dir, &["--timeout", "3"], &vars).output().unwrap();
        let said = text(&out);
        println!("rank {rank} alone, after {:.1} s: {}", start.elapsed().as_secs_f64(), said.trim());
        assert!(!out.status.success() && said.trim().lines().count() == 1, "{said}");
        let expected = format!(
            "error: rank {rank} of 2 could not join the group at 127.0.0.1:{port} within 3 s (are all 2 processes \
             started, with this MASTER_ADDR and MASTER_PORT, and is rank 0's host reachable?): "
        );
        assert!(said.starts_with(&expected), "{said}");
        assert!(start.elapsed() < Duration::from_secs(15), "took {:?}", start.elapsed());
        assert!(!dir.join("checkpoint").exists(), "nothing written");
    }
}

/// Two processes placed by SLURM's variables (as `srun` sets them inside a job step, with the
/// address and port from the user) train together: rank 0 reports and writes, rank 1 is quiet.
#[test]
fn two_tasks_of_an_srun_step_train_together() {
    let (_one, dir) = one_at_a_time_with_a_training_set();
    let dir = dir.path();
    let port = common::rendezvous_port().to_string();
    let tasks: Vec<Child> = ["0", "1"]
        .into_iter()
        .map(|rank| {
            let vars = [
                ("SLURM_PROCID", rank),
                ("SLURM_LOCALID", rank),
                ("SLURM_NTASKS", "2"),
                ("SLURM_STEP_ID", "0"),
                ("MASTER_ADDR", "127.0.0.1"),
                ("MASTER_PORT", &port),
            ];
            let args: Vec<&str> = ["--set", "optim.epochs=1"].into_iter().chain(SETS).collect();
            train_as_launched(dir, &args, &vars).spawn().unwrap()
        })
        .collect();
    let outputs: Vec<Output> = tasks.into_iter().map(|t| t.wait_with_output().unwrap()).collect();
    for (rank, out) in outputs.iter().enumerate() {
        assert!(out.status.success(), "rank {rank}: {}", text(out));
    }
    assert!(text(&outputs[0]).contains("training AMFMN on 2 processes over Gloo"), "{}", text(&outputs[0]));
    assert!(text(&outputs[1]).trim().is_empty(), "rank 1 reports nothing: {}", text(&outputs[1]));
    assert!(dir.join("checkpoint/demo/0/last.safetensors").is_file());
}
