//! `amfmn check-weights`: validates a downloaded skip-thoughts set without training.

use std::path::PathBuf;

use anyhow::{bail, Result};

use crate::model::skipthoughts;
use crate::options::Seq2VecType;
use crate::table::Table;
use crate::text::Vocabulary;

/// Arguments of `amfmn check-weights`.
#[derive(Debug, Clone, clap::Args)]
pub struct CheckWeightsArgs {
    /// The skip-thoughts folder (`model.seq2vec.dir_st`).
    #[arg(long = "dir_st", visible_alias = "dir-st", value_name = "DIR")]
    pub dir_st: PathBuf,
    /// The variant (`model.seq2vec.type`): BayesianUniSkip, UniSkip, DropUniSkip or BiSkip.
    #[arg(long = "type", default_value = "BayesianUniSkip", value_parser = parse_type)]
    pub kind: Seq2VecType,
    /// A vocabulary file: also report how many of its words the dictionary has.
    #[arg(long, value_name = "FILE")]
    pub vocab: Option<PathBuf>,
}

fn parse_type(text: &str) -> Result<Seq2VecType, String> {
    serde_json::from_value(serde_json::Value::String(text.to_owned()))
        .map_err(|_| format!("`{text}`: expected BayesianUniSkip, UniSkip, DropUniSkip or BiSkip"))
}

/// Prints one row per check; fails when any check does.
pub fn run(args: &CheckWeightsArgs) -> Result<()> {
    let vocab = args.vocab.as_deref().map(Vocabulary::load).transpose()?;
    let checks = skipthoughts::check(&args.dir_st, args.kind, vocab.as_ref().map(|v| v.words()));
    let mut table = Table::new(["check", "found", ""]);
    for c in &checks {
        table.row([c.what.clone(), c.found.clone(), if c.ok { "ok" } else { "FAILED" }.to_owned()]);
    }
    print!("{table}");
    let failed = checks.iter().filter(|c| !c.ok).count();
    if failed > 0 {
        bail!("{}: {failed} of {} checks failed (see the table above)", args.dir_st.display(), checks.len());
    }
    println!("\n{} is a complete {:?} set", args.dir_st.display(), args.kind);
    Ok(())
}
