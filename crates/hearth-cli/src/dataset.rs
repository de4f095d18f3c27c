//! `hearth dataset add|list|show|rm`: the hub's datasets in `$HEARTH_HOME/hub`, as the
//! server's `/hub/datasets` routes see them (the same database, the same checks).

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use hearth_hub::datasets::SplitShares;
use hearth_hub::{Hub, HubConfig};

#[derive(Args)]
pub struct DatasetArgs {
    #[command(subcommand)]
    command: DatasetCommand,
}

#[derive(Subcommand)]
enum DatasetCommand {
    /// Add a JSONL file (chat, tools, completions or text records), checked line by line and
    /// split into train, valid and test.
    Add {
        file: PathBuf,
        /// The dataset's name [default: the file's name without its extension].
        #[arg(long)]
        name: Option<String>,
        /// Share of the records held out for validation.
        #[arg(long, default_value_t = 0.1)]
        valid_share: f64,
        /// Share of the records held out for the test split.
        #[arg(long, default_value_t = 0.1)]
        test_share: f64,
    },
    /// List the datasets.
    List,
    /// A dataset's splits and first records; with --model, its token counts with that model.
    Show {
        name: String,
        #[arg(long, short)]
        model: Option<String>,
        #[arg(long, default_value_t = 2048)]
        max_seq_length: usize,
    },
    /// Delete a dataset.
    Rm { name: String },
}

fn hub() -> anyhow::Result<Hub> {
    let home = hearth_store::hearth_home();
    // Opened without starting its queue: that is the server's.
    let cfg = HubConfig { dir: home.join("hub"), exports_dir: home.join("exports"), workers: 1 };
    Hub::open(cfg).with_context(|| format!("opening the hub in {}", home.join("hub").display()))
}

pub fn run(args: DatasetArgs) -> anyhow::Result<()> {
    let hub = hub()?;
    let datasets = hub.datasets();
    match args.command {
        DatasetCommand::Add { file, name, valid_share, test_share } => {
            let name = match name {
                Some(n) => n,
                None => file.file_stem().map(|s| s.to_string_lossy().into_owned()).context("the file has no name")?,
            };
            let content = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let d = datasets.add(&name, &content, SplitShares { valid: valid_share, test: test_share })?;
            println!("{}: {} {} records (train {}, valid {}, test {})", d.name, d.records, d.format, d.train, d.valid, d.test);
        }
        DatasetCommand::List => {
            println!("{:<24} {:<12} {:>8} {:>7} {:>7} {:>7}", "NAME", "FORMAT", "RECORDS", "TRAIN", "VALID", "TEST");
            for d in datasets.list()? {
                println!("{:<24} {:<12} {:>8} {:>7} {:>7} {:>7}", d.name, d.format, d.records, d.train, d.valid, d.test);
            }
        }
        DatasetCommand::Show { name, model, max_seq_length } => {
            let d = datasets.get(&name)?;
            println!(
                "{}: {} {} records (train {}, valid {}, test {}), {} bytes",
                d.name, d.records, d.format, d.train, d.valid, d.test, d.bytes
            );
            if let Some(model) = model {
                let dir = crate::store_cmd::resolve_model(&model)?;
                let t = datasets.token_stats(&name, &dir, max_seq_length)?;
                println!("tokens: {} in all, {} to {} per record, mean {:.1}", t.tokens, t.min, t.max, t.mean);
                for (bound, count) in &t.histogram {
                    println!("  ≤ {bound:>6} tokens: {count}");
                }
                println!("over --max-seq-length {}: {}", t.max_seq_length, t.over_max_seq_length);
            }
            for record in datasets.preview(&name, 3)? {
                println!("{record}");
            }
        }
        DatasetCommand::Rm { name } => {
            datasets.remove(&name)?;
            println!("Deleted {name}");
        }
    }
    Ok(())
}
