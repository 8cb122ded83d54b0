//! `amfmn retrieve`: ranks the images of an index for a sentence, keywords or both; or the
//! lines of a caption file for one image.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::RuntimeArgs;
use crate::checkpoint::{Opening, TrainedModel};
use crate::encode::image_file_codes;
use crate::fsutil::owned::Outputs;
use crate::fsutil::sha256_file;
use crate::report;
use crate::search::html::{write_page, Hit};
use crate::search::index::Index;
use crate::search::{top_k, Query, Searcher};
use crate::table::Table;

/// Arguments of `amfmn retrieve`.
#[derive(Debug, Clone, clap::Args)]
pub struct RetrieveArgs {
    /// An index written by `amfmn index`.
    #[arg(long, value_name = "INDEX")]
    pub index: PathBuf,
    /// A sentence describing the images to find.
    #[arg(long)]
    pub query: Option<String>,
    /// Keywords, separated by commas ("baseball field, white house").
    #[arg(long)]
    pub keywords: Option<String>,
    /// Image-to-text: rank the lines of --captions for this image.
    #[arg(long, value_name = "FILE", requires = "captions")]
    pub image: Option<PathBuf>,
    /// A text file with one caption per line (with --image).
    #[arg(long, value_name = "FILE.txt")]
    pub captions: Option<PathBuf>,
    /// How many results to show.
    #[arg(long, default_value_t = 10)]
    pub top: usize,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Also write an HTML page with thumbnails of the results in rank order.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    /// Replace an existing output file that amfmn did not write for this purpose (or that changed since).
    #[arg(long)]
    pub force: bool,
}

/// Loads the index and its checkpoint, runs the query, prints the ranking.
pub fn run(args: &RetrieveArgs) -> Result<()> {
    let page = page_output(args)?;
    let index = Index::load(&args.index)?;
    let info = &index.info;
    let sha = sha256_file(&info.checkpoint)
        .with_context(|| format!("the index's checkpoint {} is gone; re-run amfmn index", info.checkpoint.display()))?;
    if sha != info.checkpoint_sha256 {
        bail!("{} changed since {} was made; re-run amfmn index", info.checkpoint.display(), args.index.display());
    }
    let TrainedModel { model, vocab, .. } = TrainedModel::open(&info.checkpoint, Opening::on(args.runtime.device()?))?;
    if info.vocab_sha256.as_ref().is_some_and(|h| *h != vocab.sha256()) {
        bail!("the checkpoint's vocabulary changed since {} was made; re-run amfmn index", args.index.display());
    }
    let searcher =
        Searcher::new(model, vocab, index.fv.shallow_clone(), index.gate.as_ref().map(|g| g.shallow_clone()));

    if let Some(image) = &args.image {
        return caption_ranking(args, &searcher, image);
    }
    let query = Query { sentence: args.query.clone(), keywords: args.keywords.clone() };
    if query.sentence.is_none() && query.keywords.is_none() {
        bail!("give --query \"a sentence\", --keywords \"a, b\", both, or --image FILE --captions FILE.txt");
    }
    if query.keywords.is_some() && !info.keywords_trained {
        report::warn("this checkpoint was trained without keywords (dataset.keywords off); keyword and fused scores use untrained layers");
    }
    let hits = searcher.top(&query, args.top)?;
    let paths: Vec<PathBuf> = hits.iter().map(|&(i, _)| info.root.join(&info.files[i].path)).collect();
    let title = match (&query.sentence, &query.keywords) {
        (Some(s), Some(k)) => format!("{s} [{k}]"),
        (Some(s), None) => s.clone(),
        (None, Some(k)) => format!("[{k}]"),
        (None, None) => unreachable!("checked above"),
    };
    if let Some((mut outputs, path)) = page {
        let shown: Vec<Hit> = hits
            .iter()
            .zip(&paths)
            .enumerate()
            .map(|(r, (&(_, score), path))| Hit { rank: r + 1, score, path })
            .collect();
        write_page(&mut outputs, path, &title, &shown)?;
        outputs.finish()?;
    }
    if args.json {
        let results: Vec<serde_json::Value> = hits
            .iter()
            .zip(&paths)
            .enumerate()
            .map(|(r, (&(_, score), path))| serde_json::json!({"rank": r + 1, "score": score, "path": path}))
            .collect();
        let json = serde_json::json!({"query": query.sentence, "keywords": query.keywords, "indexed": searcher.len(), "results": results});
        println!("{json}");
    } else {
        let mut table = Table::new(["rank", "score", "image"]);
        for (r, (&(_, score), path)) in hits.iter().zip(&paths).enumerate() {
            table.row([(r + 1).to_string(), format!("{score:.4}"), path.display().to_string()]);
        }
        print!("{table}");
    }
    Ok(())
}

/// With `--html`, its outputs and path, checked before any work is done.
fn page_output(args: &RetrieveArgs) -> Result<Option<(Outputs, &Path)>> {
    let Some(path) = &args.html else { return Ok(None) };
    let mut outputs = Outputs::for_file(path, "search page", args.force)?;
    outputs.check(path)?;
    Ok(Some((outputs, path)))
}

/// Image-to-text: ranks the caption lines for one image.
fn caption_ranking(args: &RetrieveArgs, searcher: &Searcher, image: &Path) -> Result<()> {
    let path = args.captions.as_ref().expect("clap requires --captions with --image");
    let text =
        crate::fsutil::read_to_string(path).with_context(|| format!("cannot read {} as UTF-8 text", path.display()))?;
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    if lines.is_empty() {
        bail!("{} has no captions", path.display());
    }
    let (fv, _) = image_file_codes(&searcher.model, image)?;
    let scores = searcher.caption_scores(&fv, &lines)?;
    let hits = top_k(&scores, args.top);
    if args.json {
        let results: Vec<serde_json::Value> = hits
            .iter()
            .enumerate()
            .map(|(r, &(i, score))| serde_json::json!({"rank": r + 1, "score": score, "line": i + 1, "caption": lines[i]}))
            .collect();
        println!("{}", serde_json::json!({"image": image, "results": results}));
    } else {
        let mut table = Table::new(["rank", "score", "caption"]);
        for (r, &(i, score)) in hits.iter().enumerate() {
            table.row([(r + 1).to_string(), format!("{score:.4}"), lines[i].to_owned()]);
        }
        print!("{table}");
    }
    Ok(())
}
