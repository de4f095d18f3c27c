use std::io::Write;

use anyhow::Context;
use clap::Args;
use hearth_runtime::{FinishReason, Request};
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
    /// Print one JSON object (text, token ids, finish reason, usage) instead of streaming.
    #[arg(long)]
    json: bool,
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
    let mut runtime = args.model.runtime(&model);
    let mut out = std::io::stdout().lock();
    let request = Request::new(prompt, args.model.params(&model));
    let completion = runtime
        .complete(request, |text| {
            // A closed stdout (e.g. piped into `head`) stops generation rather than failing.
            args.json || out.write_all(text.as_bytes()).and_then(|_| out.flush()).is_ok()
        })
        .context("generation failed")?;
    if args.json {
        let finish = match completion.finish_reason {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::Cancelled => "cancelled",
        };
        let u = completion.usage;
        let usage = json!({"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens, "cached_tokens": u.cached_tokens});
        let report = json!({"text": completion.text, "tokens": completion.tokens, "finish_reason": finish, "usage": usage});
        writeln!(out, "{report}")?;
        return Ok(());
    }
    writeln!(out)?;
    crate::stats::print(&completion);
    Ok(())
}
