//! Several processes on PyTorch's c10d (Gloo on 127.0.0.1): the collectives give what their
//! definitions say on every rank, a rank that dies stops the others with an error within the
//! timeout instead of a hang, and two processes train like two replicas in one process. Each test runs its ranks as child processes of this test binary
//! (the same test, with the launcher's variables set), as torchrun would start them.

mod common;

use std::process::{Command, Output};
use std::rc::Rc;
use std::time::{Duration, Instant};

use amfmn::dist::{Launch, ProcessGroup};
use common::training::{batch, max_diff, train_replicas, train_replicas_with, STEPS};
use tch::{Device, Kind, Tensor};

/// Runs `test` of this binary as ranks 0..world with torchrun's variables; their outputs.
fn ranks(test: &str, world: usize) -> Vec<Output> {
    let port = common::rendezvous_port().to_string();
    let children: Vec<_> = (0..world)
        .map(|rank| {
            Command::new(std::env::current_exe().unwrap())
                .args([test, "--exact", "--nocapture", "--test-threads=1"])
                .env("RANK", rank.to_string())
                .env("WORLD_SIZE", world.to_string())
                .env("LOCAL_RANK", rank.to_string())
                .env("MASTER_ADDR", "127.0.0.1")
                .env("MASTER_PORT", &port)
                .env("GLOO_SOCKET_IFNAME", "lo")
                .env("AMFMN_DIST_CHILD", "1")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    children.into_iter().map(|c| c.wait_with_output().unwrap()).collect()
}

/// The group of this child process, `None` in the parent test.
fn child_group(timeout: Duration) -> Option<ProcessGroup> {
    std::env::var_os("AMFMN_DIST_CHILD")?;
    let launch = Launch::from_env().unwrap().expect("the parent set the launch variables");
    Some(ProcessGroup::join(&launch, timeout, Device::Cpu).unwrap())
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

#[test]
fn collectives_combine_every_ranks_tensors() {
    let Some(group) = child_group(Duration::from_secs(30)) else {
        for (rank, output) in ranks("collectives_combine_every_ranks_tensors", 3).iter().enumerate() {
            assert!(output.status.success(), "rank {rank}: {}", text(output));
            assert!(text(output).contains("collectives ok"), "rank {rank}: {}", text(output));
        }
        return;
    };
    let (rank, world) = (group.rank as f64, group.world as f64);
    let mine = Tensor::from_slice(&[rank + 1.0, 10.0 * rank]).to_kind(Kind::Float);
    group.all_reduce_sum(&mine).unwrap();
    let expected = [world * (world + 1.0) / 2.0, 10.0 * world * (world - 1.0) / 2.0];
    assert_eq!(Vec::<f64>::try_from(&mine.to_kind(Kind::Double)).unwrap(), expected);
    let rows = Tensor::full([2, 3], rank, (Kind::Float, Device::Cpu));
    let gathered = group.all_gather(&rows).unwrap();
    assert_eq!(gathered.size(), [6, 3]);
    let first_column: Vec<f64> = Vec::try_from(&gathered.select(1, 0).to_kind(Kind::Double)).unwrap();
    assert_eq!(first_column, [0.0, 0.0, 1.0, 1.0, 2.0, 2.0], "rank k's rows at block k");
    let value = Tensor::full([4], if group.rank == 2 { 7.0 } else { -1.0 }, (Kind::Float, Device::Cpu));
    group.broadcast(&value, 2).unwrap();
    assert_eq!(value.sum(Kind::Double).double_value(&[]), 28.0);
    group.set(&format!("hello/{}", group.rank), format!("from {}", group.rank).as_bytes()).unwrap();
    let next = (group.rank + 1) % group.world;
    assert_eq!(group.get(&format!("hello/{next}")).unwrap(), format!("from {next}").as_bytes());
    assert!(group.has(&format!("hello/{next}")).unwrap() && !group.has("nobody wrote this").unwrap());
    let votes = |flag: bool| group.vote(flag).unwrap().double_value(&[0]);
    assert_eq!((votes(group.rank == 1), votes(group.rank > 0), votes(false)), (1.0, 2.0, 0.0), "how many voted");
    assert_eq!(group.agree("all well", Ok(group.rank)).unwrap(), group.rank);
    let verdict = if group.rank == 2 { Err(anyhow::anyhow!("no data here")) } else { Ok(()) };
    let error = format!("{:#}", group.agree("one fails", verdict).unwrap_err());
    let expected = if group.rank == 2 { "no data here" } else { "rank 2 of 3 could not start: no data here" };
    assert_eq!(error, expected, "rank {}", group.rank);
    group.barrier().unwrap();
    println!("collectives ok");
}

#[test]
fn a_rank_that_dies_stops_the_others_within_the_timeout() {
    let timeout = Duration::from_secs(10);
    let Some(group) = child_group(timeout) else {
        let start = Instant::now();
        let outputs = ranks("a_rank_that_dies_stops_the_others_within_the_timeout", 2);
        assert!(start.elapsed() < timeout * 2, "took {:?}", start.elapsed());
        assert_eq!(outputs[1].status.code(), Some(3), "{}", text(&outputs[1]));
        let lost = "rank 0 of 2: all-reduce failed, rank 1 is lost (it exited, was killed or stopped answering)";
        assert!(text(&outputs[0]).contains(lost), "{}", text(&outputs[0]));
        println!(
            "after {:?}, rank 0: {}",
            start.elapsed(),
            text(&outputs[0]).lines().find(|l| l.contains("failed")).unwrap()
        );
        return;
    };
    group.barrier().unwrap();
    if group.rank == 1 {
        std::process::exit(3);
    }
    let start = Instant::now();
    let error = group.all_reduce_sum(&Tensor::ones([8], (Kind::Float, Device::Cpu))).unwrap_err();
    assert!(start.elapsed() <= timeout + Duration::from_secs(2), "took {:?}", start.elapsed());
    println!("{error:#}");
}

/// Two ranks, each encoding its share of the batch (3 + 2 pairs, with keywords: three codes
/// gathered), give after two steps the weights and buffers of two replicas in one process
/// (`--device cpu,cpu`), and the same weights on both ranks.
fn two_ranks_train_like_two_replicas(test: &str, train: bool) {
    let Some(group) = child_group(Duration::from_secs(60)) else {
        let outputs = ranks(test, 2);
        let said: Vec<String> = outputs.iter().map(text).collect();
        for (rank, output) in outputs.iter().enumerate() {
            assert!(output.status.success(), "rank {rank}: {}", said[rank]);
        }
        let checksum = |s: &str| s.lines().find(|l| l.starts_with("weights ")).map(str::to_owned);
        assert!(checksum(&said[0]).is_some() && checksum(&said[0]) == checksum(&said[1]), "{said:?}");
        println!("{}", said[0].lines().find(|l| l.contains("in one process")).unwrap_or_default());
        return;
    };
    let rank = group.rank;
    let pairs = batch(5, true);
    let ranks = train_replicas_with(&[Device::Cpu], &pairs, train, STEPS, |r| r.with_peers(Rc::new(group)).unwrap());
    let one_process = train_replicas(&[Device::Cpu, Device::Cpu], &pairs, train, STEPS);
    let diff = max_diff(&one_process[0], &ranks[0], |_| true);
    println!("rank {rank}: two ranks against two replicas in one process: max |dw| = {diff:.2e}");
    assert!(diff <= 1e-5, "rank {rank} differs from two replicas in one process by {diff}");
    let sum: f64 = ranks[0].values().map(|v| v.to_kind(Kind::Double).sum(Kind::Double).double_value(&[])).sum();
    println!("weights {:x}", sum.to_bits());
}

#[test]
fn two_ranks_with_frozen_batch_norm_train_like_two_replicas() {
    two_ranks_train_like_two_replicas("two_ranks_with_frozen_batch_norm_train_like_two_replicas", false);
}

#[test]
fn two_ranks_with_training_batch_norm_train_like_two_replicas() {
    two_ranks_train_like_two_replicas("two_ranks_with_training_batch_norm_train_like_two_replicas", true);
}
