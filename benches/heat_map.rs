//! The map stages of `amfmn locate` (SLM's Gnt and Flt) on a scene of H×W pixels with steps
//! 256/512/768 and smooth seeded scores: the compressed-grid mean to u8, then the 251 median.
//!
//! `cargo bench --bench heat_map -- [HEIGHT WIDTH]` (default 10001 10000); prints
//! `crops=…`, `gnt_s=…`, `flt_s=…`.

use std::time::Instant;

use amfmn::locate::heat::{crops, median_filter, MeanMap};
use amfmn::rng::{stream, uniform};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let height: usize = args.first().map_or(Ok(10_001), |s| s.parse())?;
    let width: usize = args.get(1).map_or(Ok(10_000), |s| s.parse())?;
    let all = crops(height, width, &[256, 512, 768]);
    let mut rng = stream(3, &[]);
    let (cy, cx) = (height as f64 * 0.3, width as f64 * 0.6);
    let scores: Vec<f64> = all
        .iter()
        .map(|c| {
            let (y, x) = ((c.r0 + c.r1) as f64 / 2.0, (c.c0 + c.c1) as f64 / 2.0);
            let d = ((y - cy).powi(2) + (x - cx).powi(2)).sqrt() / width as f64;
            (-4.0 * d).exp() + uniform(&mut rng, 0.0, 0.2)
        })
        .collect();
    let start = Instant::now();
    let map = MeanMap::new(height, width, &all, &scores).to_u8();
    let gnt = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let filtered = median_filter(&map, 251);
    let flt = start.elapsed().as_secs_f64();
    let checksum: u64 = filtered.pixels.iter().map(|&p| p as u64).sum();
    println!("crops={} gnt_s={gnt:.3} flt_s={flt:.3} sum={checksum}", all.len());
    Ok(())
}
