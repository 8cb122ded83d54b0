//! Query latency of `amfmn retrieve`'s search over N indexed images (synthetic codes): encoding a
//! sentence with the skip-thoughts encoder, scoring every image (closed form for soft
//! attention), taking the top 10.
//!
//! `cargo bench --bench retrieve -- N [QUERIES]`; prints `ms_per_query=<median>`,
//! `encode_ms=<median of the sentence encoding alone>`, `memory_mb=<codes in memory>`.

use std::time::Instant;

use amfmn::model::{Model, ModelConfig};
use amfmn::options::Options;
use amfmn::search::{Query, Searcher};
use tch::{Device, Kind, Tensor};

#[path = "../tests/common/mod.rs"]
mod common;

use common::SENTENCES;

fn main() -> anyhow::Result<()> {
    amfmn::device::tune_allocator();
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let n: i64 = args.first().map_or(Ok(10_000), |s| s.parse())?;
    let queries: usize = args.get(1).map_or(Ok(20), |s| s.parse())?;
    let options = Options::parse(&std::fs::read_to_string("option/RSITMD_AMFMN.yaml")?, &[])?;
    let vocab = common::sentence_vocabulary();
    let model = Model::new(&ModelConfig::new(&options, vocab.len()), Device::Cpu, 0)?;
    tch::manual_seed(1);
    let fv = Tensor::randn([n, 512], (Kind::Float, Device::Cpu));
    let gate = Tensor::randn([n, 512], (Kind::Float, Device::Cpu)).sigmoid();
    let searcher = Searcher::new(model, vocab, fv, Some(gate));
    let memory_mb = searcher.memory_bytes() as f64 / 1e6;
    let mut times = Vec::new();
    for i in 0..=queries {
        let query = Query { sentence: Some(SENTENCES[i % SENTENCES.len()].to_owned()), keywords: None };
        let start = Instant::now();
        let hits = searcher.top(&query, 10)?;
        assert_eq!(hits.len(), 10);
        if i > 0 {
            times.push(start.elapsed().as_secs_f64() * 1000.0);
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let mut encode = Vec::new();
    for i in 0..=queries {
        let start = Instant::now();
        let _ = searcher.encode_texts(&[SENTENCES[i % SENTENCES.len()]]);
        if i > 0 {
            encode.push(start.elapsed().as_secs_f64() * 1000.0);
        }
    }
    println!("ms_per_query={:.1}", median(times));
    println!("encode_ms={:.1}", median(encode));
    println!("memory_mb={memory_mb:.0}");
    Ok(())
}
