use std::io::Write;

use anyhow::Context;
use clap::Args;
use hearth_tokenizer::RenderOptions;
use serde_json::json;

use crate::ModelArgs;

#[derive(Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[arg(long, short)]
    prompt: String,
    /// System message (chat models only).
    #[arg(long)]
    system: Option<String>,
    /// Send the prompt as raw text instead of through the chat template.
    #[arg(long)]
    raw: bool,
}

pub fn run(args: GenerateArgs) -> anyhow::Result<()> {
    let model = args.model.load()?;
    let prompt = match (&model.chat_template, args.raw) {
        (Some(template), false) => {
            let mut messages = Vec::new();
            if let Some(s) = &args.system {
                messages.push(json!({"role": "system", "content": s}));
            }
            messages.push(json!({"role": "user", "content": args.prompt}));
            let text = template.render(&messages, &RenderOptions { add_generation_prompt: true, ..Default::default() })?;
            model.tokenizer.encode(&text, false)?
        }
        _ => {
            anyhow::ensure!(args.system.is_none(), "--system needs a chat template; this model has none (or --raw was given)");
            model.tokenizer.encode(&args.prompt, true)?
        }
    };
    let mut session = hearth_engine::Session::new(&model, args.model.context(&model))?;
    let mut out = std::io::stdout().lock();
    let generation = session
        .generate(&prompt, &args.model.params(), |ev| {
            // A closed stdout (e.g. piped into `head`) stops generation rather than failing.
            out.write_all(ev.text.as_bytes()).and_then(|_| out.flush()).is_ok()
        })
        .context("generation failed")?;
    writeln!(out)?;
    crate::stats::print(&generation);
    Ok(())
}
