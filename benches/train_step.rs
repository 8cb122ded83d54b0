//! Training-step time of the AMFMN model (forward, loss, backward, Adam: the trainer's step,
//! through `train::Replicas` on one device) on random 256x256 images and 15-token captions, and
//! of the text encoder alone (forward + backward).
//!
//! `cargo bench --bench train_step -- BATCH STEPS`; prints `step_seconds=<median>` and
//! `text_seconds=<median>`. `exec/bench_train.sh` runs it beside the PyTorch reference.

use amfmn::data::PairBatch;
use amfmn::loss::{contrastive_loss, Margin};
use amfmn::model::Model;
use amfmn::optim::Adam;
use amfmn::options::Options;
use amfmn::train::Replicas;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    amfmn::device::tune_allocator();
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let batch: i64 = args.first().map_or(Ok(10), |s| s.parse())?;
    let steps: usize = args.get(1).map_or(Ok(4), |s| s.parse())?;
    let text = std::fs::read_to_string("option/RSITMD_AMFMN.yaml")?;
    let options = Options::parse(&text, &["model.seq2vec.dropout=0.25".into()])?;
    let vocab = 1349;
    let model = Model::new(&options, vocab, Device::Cpu, 0)?;
    let mut adam = Adam::new(model.trainable(), 2e-4);
    tch::manual_seed(0);
    let pixels = Tensor::randn([batch, 3, 256, 256], (Kind::Float, Device::Cpu));
    let images = model.prepare_images(&pixels);
    let ids = Tensor::randint_low(1, vocab as i64, [batch, 15], (Kind::Int64, Device::Cpu));
    let lengths = Tensor::full([batch], 15, (Kind::Int64, Device::Cpu));
    let rows: Vec<usize> = (0..batch as usize).collect();
    let pairs = PairBatch {
        images: pixels,
        captions: ids.shallow_clone(),
        lengths: lengths.shallow_clone(),
        caption_ids: rows.clone(),
        image_ids: rows,
        keywords: None,
    };
    let replicas = Replicas::new(model, &[], &options, vocab)?;
    let mut step_times = Vec::new();
    for i in 0..=steps {
        let start = Instant::now();
        let scores = replicas.scores(&pairs, true);
        let loss = contrastive_loss(&scores[0], &Margin::Fixed(0.2), false);
        replicas.update(&mut adam, &loss, 0.0);
        if i > 0 {
            step_times.push(start.elapsed().as_secs_f64());
        }
    }
    let model = &replicas.primary;
    let mut text_times = Vec::new();
    for i in 0..=steps {
        let start = Instant::now();
        model.backward(&model.net.encode_texts(&ids, &lengths, true).sum(Kind::Float));
        if i > 0 {
            text_times.push(start.elapsed().as_secs_f64());
        }
    }
    let mut image_times = Vec::new();
    for i in 0..=steps {
        let start = Instant::now();
        model.net.encode_images(&images, true).sum(Kind::Float).backward();
        if i > 0 {
            image_times.push(start.elapsed().as_secs_f64());
        }
    }
    let mut adam_times = Vec::new();
    for i in 0..=steps {
        let start = Instant::now();
        adam.step();
        if i > 0 {
            adam_times.push(start.elapsed().as_secs_f64());
        }
    }
    println!("image_seconds={:.4}", median(image_times));
    println!("adam_seconds={:.4}", median(adam_times));
    println!("step_seconds={:.4}", median(step_times));
    println!("text_seconds={:.4}", median(text_times));
    Ok(())
}
