//! The `amfmn` command line: parses arguments and calls the library.

use std::process::ExitCode;

use amfmn::commands::{
    check_weights, index, inspect, locate, metrics, prepare, retrieve, saliency, selo, serve, synth, test, train, vocab,
};
use clap::{Parser, Subcommand};

/// AMFMN cross-modal remote-sensing image-text retrieval (Yuan et al., TGRS 2021).
#[derive(Parser)]
#[command(name = "amfmn", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build a vocabulary JSON from caption files (the original's vocab.py).
    Vocab(vocab::VocabArgs),
    /// Write the synthetic remote-sensing demo set in the precomp layout.
    Synth(synth::SynthArgs),
    /// Write large synthetic scenes with localisation queries and SeLo annotations.
    SynthScenes(synth::SynthScenesArgs),
    /// Read a dataset through its option file, check it and print statistics.
    Inspect(inspect::InspectArgs),
    /// Train AMFMN on every fold (the original's train.py).
    Train(train::TrainArgs),
    /// Evaluate every fold's best checkpoint on the test split, and the average (test.py).
    Test(test::TestArgs),
    /// Evaluate one checkpoint on the test split (test_single.py).
    TestSingle(test::TestSingleArgs),
    /// Recall metrics of a saved images x captions score matrix.
    Metrics(metrics::MetricsArgs),
    /// Encode every image of a folder once, for retrieve.
    Index(index::IndexArgs),
    /// Rank indexed images for a sentence and/or keywords, or captions for an image.
    Retrieve(retrieve::RetrieveArgs),
    /// Write the precomp layout from a release JSON (dataset_RSITMD.json, dataset_rsicd.json).
    Prepare(prepare::PrepareArgs),
    /// Validate a skip-thoughts folder (model.seq2vec.dir_st) without training.
    CheckWeights(check_weights::CheckWeightsArgs),
    /// The SeLo indicators (Rsu, Ras, Rda, Rmi) of probability maps against annotated regions.
    Selo(selo::SeloArgs),
    /// Where in a large scene a sentence or keywords apply: a probability map and its overlay.
    Locate(locate::LocateArgs),
    /// MVSA's spatial saliency of images: grey masks, JET overlays, an HTML page.
    Saliency(saliency::SaliencyArgs),
    /// The retrieval service: upload, search and manage images over HTTP (and its tokens).
    Serve(serve::ServeArgs),
}

/// A command-line error as one line: clap's first paragraph (`error: ...` and the arguments it
/// names), without the usage and help lines that follow.
fn usage_error_line(error: &clap::Error) -> String {
    let text = error.render().to_string();
    let first: Vec<&str> = text.lines().map(str::trim).take_while(|l| !l.is_empty()).collect();
    amfmn::report::escape_controls(&first.join(" "))
}

fn main() -> ExitCode {
    amfmn::device::tune_allocator();
    amfmn::report::install(std::sync::Arc::new(amfmn::report::Terminal));
    amfmn::logging::quiet_tensorboard_panics();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            eprintln!("{}", usage_error_line(&e));
            return ExitCode::from(2);
        }
    };
    let result = match &cli.command {
        Command::Vocab(args) => vocab::run(args),
        Command::Synth(args) => synth::run(args),
        Command::SynthScenes(args) => synth::run_scenes(args),
        Command::Inspect(args) => inspect::run(args),
        Command::Train(args) => train::run(args),
        Command::Test(args) => test::run_test(args),
        Command::TestSingle(args) => test::run_test_single(args),
        Command::Metrics(args) => metrics::run(args),
        Command::Index(args) => index::run(args),
        Command::Retrieve(args) => retrieve::run(args),
        Command::Prepare(args) => prepare::run(args),
        Command::CheckWeights(args) => check_weights::run(args),
        Command::Selo(args) => selo::run(args),
        Command::Locate(args) => locate::run(args),
        Command::Saliency(args) => saliency::run(args),
        Command::Serve(args) => serve::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => match e.downcast_ref::<train::Stopped>() {
            Some(stopped) => {
                if stopped.resume.is_some() {
                    amfmn::report::stderr_line(&amfmn::report::escape_controls(&stopped.to_string()));
                }
                ExitCode::from(130)
            }
            None => {
                amfmn::report::stderr_line(&format!("error: {}", amfmn::report::error_line(&e)));
                ExitCode::FAILURE
            }
        },
    }
}
